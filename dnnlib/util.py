"""Small helpers under the upstream-compatible name `dnnlib.util`: an attribute-access dict (pickles of the
official StyleGAN2-ADA code reference `dnnlib.util.EasyDict`) and a cached, atomic URL/file opener."""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import urllib.parse
import urllib.request
from typing import IO, Any

import requests
from tqdm import tqdm

from stylegan_rlo.fileio import atomic_write

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 60


class EasyDict(dict):
    """A dict whose keys double as attributes: `d.key` reads, sets and deletes `d['key']`."""

    __setattr__ = dict.__setitem__

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        raise AttributeError(name)  # keeps getattr(d, name, default) and hasattr() working

    def __delattr__(self, name: str) -> None:
        if name not in self:
            raise AttributeError(name)
        del self[name]


class DownloadError(IOError):
    """A URL could not be fetched; the message says how to provide the file by hand."""


def make_cache_dir_path(*paths: str) -> str:
    """Path inside the download cache: $DNNLIB_CACHE_DIR if set, else ~/.cache/dnnlib (as the official code)."""
    root = os.environ.get("DNNLIB_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "dnnlib")
    return os.path.join(root, *paths)


def is_url(obj: Any) -> bool:
    """True for a string of the form scheme://..."""
    return isinstance(obj, str) and _URL_SCHEME.match(obj) is not None


def open_url(url: str, cache_dir: str | None = None, num_attempts: int = 10, verbose: bool = True,
             return_filename: bool = False, cache: bool = True) -> Any:
    """Open a local path, file:// URL or http(s) URL for binary reading (or return its local filename).

    http(s) downloads are stored once in `cache_dir` (default: make_cache_dir_path('downloads')) under the MD5 of
    the URL, written atomically, and later calls reuse that file without touching the network.
    """
    if num_attempts < 1:
        raise ValueError(f"num_attempts must be >= 1, got {num_attempts}")
    if return_filename and not cache:
        raise ValueError("return_filename=True needs cache=True (an uncached download has no file name)")

    if not is_url(url):
        return url if return_filename else open(url, "rb")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "file":
        path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
        return path if return_filename else open(path, "rb")
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {scheme!r} in {url!r} (use http, https, file or a local path)")

    cache_dir = cache_dir or make_cache_dir_path("downloads")
    url_md5 = hashlib.md5(url.encode("utf-8")).hexdigest()
    target = os.path.join(cache_dir, f"{url_md5}_{_file_name_for(url)}")
    if cache:
        hits = sorted(glob.glob(os.path.join(glob.escape(cache_dir), url_md5 + "_*")))
        if hits:
            return hits[0] if return_filename else open(hits[0], "rb")
        with atomic_write(target, "wb") as f:
            _download(url, f, num_attempts, verbose, target)
        return target if return_filename else open(target, "rb")

    buffer = io.BytesIO()
    _download(url, buffer, num_attempts, verbose, target)
    buffer.seek(0)
    return buffer


def _file_name_for(url: str) -> str:
    """A filesystem-safe name derived from the last path component of a URL."""
    name = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:128]


def _download(url: str, out: IO[bytes], num_attempts: int, verbose: bool, target: str) -> None:
    """Stream `url` into `out` with a progress bar, retrying transient failures; raise DownloadError if all fail."""
    last_error = "unknown error"
    for _attempt in range(num_attempts):
        out.seek(0)
        out.truncate()
        try:
            with requests.get(url, stream=True, timeout=_TIMEOUT_S) as response:
                response.raise_for_status()
                expected = int(response.headers.get("Content-Length", 0)) or None
                received = 0
                with tqdm(total=expected, unit="B", unit_scale=True, desc=_file_name_for(url),
                          disable=not verbose, leave=False) as bar:
                    for chunk in response.iter_content(_CHUNK_BYTES):
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                if expected is not None and received != expected:
                    raise IOError(f"connection closed after {received} of {expected} bytes")
                return
        except requests.HTTPError as e:
            last_error = str(e)
            if e.response is not None and 400 <= e.response.status_code < 500:
                break  # a client error will not go away by retrying
        except (requests.RequestException, IOError) as e:
            last_error = str(e)
    raise DownloadError(
        f"Could not download {url} ({last_error}). Fetch the file yourself (browser, or `curl -L -o FILE URL`) "
        f"and pass its local path instead of the URL, or save it as {target} so the cache finds it.")
