"""Downloads against hostile or broken local servers: one that accepts and never answers is given up after the
stall deadline (not 10 x 60 s), an HTML page served as a .pkl is refused before caching, a bad cached file is named,
and the CLIs report all of it without a traceback."""

import hashlib
import http.server
import os
import socket
import time

import pytest
from click.testing import CliRunner

from dnnlib import download, util
from stylegan_rlo.checkpoints import pickles
from stylegan_rlo.cli.calc_fid import main as calc_fid_main
from stylegan_rlo.cli.generate import main as generate_main

HTML = b"<!DOCTYPE html>\n<html><body>Please sign in to download this file.</body></html>"


class HtmlHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(HTML)))
        self.end_headers()
        self.wfile.write(HTML)

    def log_message(self, *args):
        pass


@pytest.fixture()
def silent_server():
    """A TCP port whose connections are accepted (by the kernel's backlog) and never answered."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture()
def html_server(http_server):
    return http_server(HtmlHandler)[1]


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/net.pkl"


def test_silent_server_is_given_up_after_the_stall_deadline(silent_server, download_cache, monkeypatch, capsys):
    monkeypatch.setattr(download, "STALL_TIMEOUT_S", 1.5)
    url = f"{silent_server}/model.pkl"
    start = time.monotonic()
    with pytest.raises(util.DownloadError, match=r"no data received for 1.5 s") as info:
        util.open_url(url, num_attempts=10, verbose=True)
    assert time.monotonic() - start < 15  # one stall, not ten attempts of it
    assert url in str(info.value) and "local path" in str(info.value)
    assert capsys.readouterr().err.startswith(f"Downloading {url} ...")
    assert not download_cache.exists() or os.listdir(download_cache) == []


def test_html_page_is_not_cached_as_a_pickle(html_server, download_cache):
    url = f"{html_server}/models/ffhq.pkl"
    with pytest.raises(pickles.PickleError, match="HTML page") as info:
        pickles.load_network_pkl(url)
    assert isinstance(info.value, util.DownloadError) and "nothing was cached" in str(info.value)
    assert not download_cache.exists() or os.listdir(download_cache) == []
    with util.open_url(f"{html_server}/page.html", verbose=False) as f:  # asked for HTML: fine
        assert f.read() == HTML


def test_corrupt_cached_download_is_named(download_cache):
    url = "http://127.0.0.1:9/models/net.pkl"  # never contacted: the cache already holds it
    cached = download_cache / f"{hashlib.md5(url.encode()).hexdigest()}_net.pkl"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\x80\x04garbage")
    with pytest.raises(pickles.CorruptPickleError) as info:
        pickles.load_network_pkl(url)
    assert str(cached) in str(info.value) and "Delete the cached copy" in str(info.value)


def test_cli_unreachable_url_is_an_error_message(download_cache, tmp_path):
    url = _closed_port_url()
    runs = [
        CliRunner().invoke(generate_main, ["--network", url, "--seeds", "0", "--device", "cpu",
                                           "--outdir", str(tmp_path / "out")]),
        CliRunner().invoke(calc_fid_main, ["--network", url, "--data", str(tmp_path), "--device", "cpu"]),
    ]
    for result in runs:
        assert result.exit_code not in (0, None) and "Could not download" in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
