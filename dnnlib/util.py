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
from typing import Any

from .atomic import atomic_write
from .download import DownloadError, fetch  # noqa: F401 (DownloadError: part of this API)

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


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
            if not os.path.isfile(hits[0]):  # a folder, FIFO or device (os.stat follows links, like open)
                raise DownloadError(f"the download cache entry {hits[0]} for {url} is not a regular file; remove it "
                                    f"to download the file again")
            return hits[0] if return_filename else open(hits[0], "rb")
        try:
            with atomic_write(target, "wb") as f:
                fetch(url, f, num_attempts=num_attempts, verbose=verbose, target=target)
        except DownloadError:
            raise
        except OSError as e:  # the cache folder is a file, read-only, full...
            raise DownloadError(f"cannot write the download cache file {target} ({e.strerror or e}); make "
                                f"{cache_dir} a writable folder, or set DNNLIB_CACHE_DIR to one") from e
        return target if return_filename else open(target, "rb")

    buffer = io.BytesIO()
    fetch(url, buffer, num_attempts=num_attempts, verbose=verbose, target=target)
    buffer.seek(0)
    return buffer


def _file_name_for(url: str) -> str:
    """A filesystem-safe name derived from the last path component of a URL."""
    name = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:128]
