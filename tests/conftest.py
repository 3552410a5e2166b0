"""Fixtures shared by the tests (pytest finds them here; test modules do not import them)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """The test machine is shared: one torch thread (restored afterwards)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def small_grids(monkeypatch):
    """4x3 image grids instead of upstream's 32x32 (1024 fakes per grid cost seconds on the CPU)."""
    from stylegan_rlo.training import loop as training_loop
    monkeypatch.setattr(training_loop, "default_grid_size", lambda image_shape: (4, 3))


@pytest.fixture
def download_cache(tmp_path, monkeypatch):
    """dnnlib's download cache folder, inside the test's temporary folder ($DNNLIB_CACHE_DIR points there)."""
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "downloads"


@pytest.fixture
def http_server():
    """Start a local HTTP server on 127.0.0.1: http_server(handler_class) -> (server, base URL); stopped afterwards."""
    import http.server
    import threading
    servers = []

    def start(handler_class):
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
