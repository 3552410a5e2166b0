"""Downloads against local servers that trickle, compress, fail or loop: a trickle cannot keep a download alive past
the no-progress deadline, gzip Content-Encoding is decoded (the length check counts bytes on the wire), server
errors are retried a bounded number of times with doubling back-off, redirect loops are refused at once, and
unusable cache entries or cache folders are clear errors."""

import gzip
import hashlib
import http.server
import os
import time

import pytest

from dnnlib import download, util
from stylegan_rlo.checkpoints import pickles
from training_fixtures import DATA

PICKLE = (DATA / "tiny_uncond.pkl").read_bytes()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path == "/trickle.pkl":  # announces 1 MB, then one byte every 50 ms
            self.send_response(200)
            self.send_header("Content-Length", str(10**6))
            self.end_headers()
            try:
                for _ in range(10**6):
                    self.wfile.write(b"\x80")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:  # the client gave up
                pass
        elif self.path in ("/gzip/net.pkl", "/br/net.pkl"):
            body = gzip.compress(PICKLE)
            self.send_response(200)
            self.send_header("Content-Encoding", self.path.split("/")[1])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/down.pkl":
            self._send(500, b"internal error")
        elif self.path.startswith("/loop"):
            self.send_response(302)
            self.send_header("Location", "/loop" + str(len(self.server.requests) % 2))
            self.send_header("Content-Length", "0")
            self.end_headers()
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


def test_trickling_server_is_given_up_at_the_deadline(server, download_cache, monkeypatch):
    httpd, base = server
    monkeypatch.setattr(download, "STALL_TIMEOUT_S", 1.0)
    start = time.monotonic()
    with pytest.raises(util.DownloadError, match=r"too slow: less than 65536 bytes received in 1 s"):
        util.open_url(f"{base}/trickle.pkl", verbose=False)
    assert time.monotonic() - start < 10  # before the fix: 10^6 bytes at 20 per second, 10 times over
    assert httpd.requests == ["/trickle.pkl"]  # a stall is not retried
    assert not download_cache.exists() or os.listdir(download_cache) == []


def test_gzip_encoded_pickle_is_decoded_and_loads(server, download_cache):
    httpd, base = server
    url = f"{base}/gzip/net.pkl"
    data = pickles.load_network_pkl(url)
    assert data["G_ema"] is not None and httpd.requests == ["/gzip/net.pkl"]
    cached = download_cache / (hashlib.md5(url.encode()).hexdigest() + "_net.pkl")
    assert cached.read_bytes() == PICKLE


def test_unsupported_encoding_is_refused_clearly(server, download_cache):
    httpd, base = server
    with pytest.raises(util.DownloadError, match="Content-Encoding 'br', which is not supported"):
        util.open_url(f"{base}/br/net.pkl", verbose=False)
    assert httpd.requests == ["/br/net.pkl"]


def test_server_errors_are_retried_with_backoff_a_bounded_number_of_times(server, download_cache, monkeypatch):
    httpd, base = server
    waits = []
    monkeypatch.setattr(download, "_sleep", waits.append)
    with pytest.raises(util.DownloadError, match=r"500 Server Error.*gave up after 4 such answers"):
        util.open_url(f"{base}/down.pkl", num_attempts=10, verbose=False)
    assert httpd.requests == ["/down.pkl"] * download.SERVER_ERROR_ATTEMPTS
    assert waits == [download.RETRY_BACKOFF_S * 2**i for i in range(download.SERVER_ERROR_ATTEMPTS - 1)]


def test_redirect_loop_is_refused_without_retrying(server, download_cache):
    httpd, base = server
    with pytest.raises(util.DownloadError, match=f"more than {download.MAX_REDIRECTS} redirects"):
        util.open_url(f"{base}/loop", num_attempts=10, verbose=False)
    assert len(httpd.requests) == download.MAX_REDIRECTS + 1


def test_cache_entry_that_is_a_folder_is_named(server, download_cache):
    _, base = server
    url = f"{base}/gzip/net.pkl"
    entry = download_cache / (hashlib.md5(url.encode()).hexdigest() + "_net.pkl")
    entry.mkdir(parents=True)
    with pytest.raises(util.DownloadError, match=f"cache entry {entry} .* not a regular file; remove it"):
        util.open_url(url)
    with pytest.raises(pickles.PickleDownloadError, match="not a regular file"):
        pickles.load_network_pkl(url)


def test_cache_folder_that_is_a_file_is_named(server, download_cache):
    _, base = server
    download_cache.parent.mkdir(parents=True)
    download_cache.write_bytes(b"")
    with pytest.raises(pickles.PickleDownloadError, match="cannot write the download cache file .*DNNLIB_CACHE_DIR"):
        pickles.load_network_pkl(f"{base}/gzip/net.pkl")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_cache_folder_is_named(server, download_cache):
    _, base = server
    download_cache.mkdir(parents=True)
    download_cache.chmod(0o555)
    try:
        with pytest.raises(pickles.PickleDownloadError, match="cannot write the download cache file"):
            pickles.load_network_pkl(f"{base}/gzip/net.pkl")
    finally:
        download_cache.chmod(0o755)
