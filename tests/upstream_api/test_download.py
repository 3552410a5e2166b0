"""dnnlib.util.open_url and URL loading of network pickles, against a local HTTP server on 127.0.0.1."""

import hashlib
import http.server
import io
import os
import pathlib
import socket

import pytest
import torch
from training_fixtures import DATA

from dnnlib import util
from stylegan_rlo.checkpoints import pickles

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: several chunks


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves fixed routes and records every request path in `server.requests`."""

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path == "/net/tiny_uncond.pkl":
            self._send(200, (DATA / "tiny_uncond.pkl").read_bytes())
        elif self.path == "/blob.bin":
            self._send(200, PAYLOAD)
        elif self.path == "/cut.bin":  # announces more bytes than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
            self.close_connection = True
        elif self.path == "/flaky.bin" and self.server.requests.count("/flaky.bin") == 1:
            self._send(503, b"busy")
        elif self.path == "/flaky.bin":
            self._send(200, PAYLOAD)
        else:
            self._send(404, b"not found")

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(http_server):
    httpd, url = http_server(Handler)
    httpd.requests = []
    return httpd, url


def test_cache_dir_follows_environment(download_cache):
    assert util.make_cache_dir_path("downloads", "x") == str(download_cache / "x")


def test_download_once_then_served_from_cache(server, download_cache):
    httpd, base = server
    url = f"{base}/blob.bin"
    with util.open_url(url, verbose=False) as f:
        assert f.read() == PAYLOAD
    expected_name = hashlib.md5(url.encode()).hexdigest() + "_blob.bin"
    assert os.listdir(download_cache) == [expected_name]  # no temp files left behind
    assert util.open_url(url, return_filename=True) == str(download_cache / expected_name)
    with util.open_url(url) as f:
        assert f.read() == PAYLOAD
    assert httpd.requests == ["/blob.bin"]


def test_uncached_download_returns_bytes(server, download_cache):
    httpd, base = server
    f = util.open_url(f"{base}/blob.bin", cache=False, verbose=False)
    assert isinstance(f, io.BytesIO) and f.read() == PAYLOAD
    assert not download_cache.exists()
    with pytest.raises(ValueError):
        util.open_url(f"{base}/blob.bin", cache=False, return_filename=True)


def test_transient_server_error_is_retried(server, download_cache):
    httpd, base = server
    with util.open_url(f"{base}/flaky.bin", num_attempts=3, verbose=False) as f:
        assert f.read() == PAYLOAD
    assert httpd.requests == ["/flaky.bin", "/flaky.bin"]


def test_missing_url_fails_clearly_without_retry(server, download_cache):
    httpd, base = server
    url = f"{base}/nothing.pkl"
    with pytest.raises(util.DownloadError) as info:
        util.open_url(url, num_attempts=5, verbose=False)
    message = str(info.value)
    assert url in message and "404" in message and str(download_cache) in message and "local path" in message
    assert httpd.requests == ["/nothing.pkl"]
    assert not download_cache.exists() or os.listdir(download_cache) == []


def test_truncated_download_leaves_no_partial_file(server, download_cache):
    httpd, base = server
    with pytest.raises(util.DownloadError, match="cut.bin"):
        util.open_url(f"{base}/cut.bin", num_attempts=2, verbose=False)
    assert httpd.requests == ["/cut.bin", "/cut.bin"]
    assert os.listdir(download_cache) == []


def test_unreachable_host_fails_clearly(download_cache):
    with socket.socket() as s:  # find a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(util.DownloadError, match=f"127.0.0.1:{port}"):
        util.open_url(f"http://127.0.0.1:{port}/x.pkl", num_attempts=2, verbose=False)


def test_local_paths_and_file_urls(tmp_path):
    path = tmp_path / "some file.bin"
    path.write_bytes(b"abc")
    with util.open_url(str(path)) as f:
        assert f.read() == b"abc"
    with util.open_url(path.as_uri()) as f:
        assert f.read() == b"abc"
    assert util.open_url(path.as_uri(), return_filename=True) == str(path)
    with pytest.raises(ValueError, match="ftp"):
        util.open_url("ftp://example.com/x")


def test_load_network_pkl_from_url_downloads_once(server, download_cache):
    httpd, base = server
    url = f"{base}/net/tiny_uncond.pkl"
    first = pickles.load_network_pkl(url)
    second = pickles.load_network_pkl(url)
    assert httpd.requests == ["/net/tiny_uncond.pkl"]
    local = pickles.load_network_pkl(DATA / "tiny_uncond.pkl")
    for snapshot in (first, second):
        for (name, a), (_, b) in zip(snapshot["G_ema"].state_dict().items(), local["G_ema"].state_dict().items()):
            assert torch.equal(a, b), name
    with pytest.raises(util.DownloadError, match="missing.pkl"):
        pickles.load_network_pkl(f"{base}/net/missing.pkl")


def test_default_cache_is_home_dot_cache_dnnlib(server, tmp_path, monkeypatch):
    httpd, base = server
    monkeypatch.delenv("DNNLIB_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = util.open_url(f"{base}/blob.bin", return_filename=True, verbose=False)
    assert pathlib.Path(path).parent == tmp_path / "home" / ".cache" / "dnnlib" / "downloads"
    assert pathlib.Path(path).read_bytes() == PAYLOAD


def test_download_shows_a_progress_bar(server, download_cache, capfd):
    httpd, base = server
    with util.open_url(f"{base}/blob.bin") as f:  # verbose by default, like load_network_pkl
        assert f.read() == PAYLOAD
    err = capfd.readouterr().err
    assert "blob.bin" in err and "/1.05M" in err  # a tqdm bar: file name and expected byte count
    util.open_url(f"{base}/blob.bin").close()  # cached: no download, no bar
    assert capfd.readouterr().err == ""
