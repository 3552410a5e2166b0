"""Fetching one URL into a file object for dnnlib.util.open_url: retries for transient failures, but one deadline
for the whole download (STALL_TIMEOUT_S without receiving a byte, whatever the number of attempts), messages on
stderr while it waits or retries, and a check that the server sent the file rather than an HTML page, made before
anything is cached.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.parse
from typing import IO, Callable

import requests
from tqdm import tqdm

CHUNK_BYTES = 1 << 20
STALL_TIMEOUT_S = 120.0  # give up after this long without a byte from the server (over all attempts)
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")


class DownloadError(OSError):
    """A URL could not be fetched; the message says how to provide the file by hand."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _file_name(url: str) -> str:
    return os.path.basename(urllib.parse.urlparse(url).path) or url


def _looks_like_html(url: str, content_type: str, head: bytes) -> bool:
    """An HTML page (a sign-in, consent or error page) where a non-HTML file was asked for."""
    if _file_name(url).lower().endswith((".html", ".htm")):
        return False
    return content_type.split(";")[0].strip().lower() == "text/html" or \
        head.lstrip()[:16].lower().startswith(_HTML_STARTS)


def fetch(url: str, out: IO[bytes], *, num_attempts: int, verbose: bool, target: str,
          stall_timeout_s: float | None = None, log: Callable[[str], None] = _stderr) -> None:
    """Stream `url` into `out` (rewound for each attempt); DownloadError when every attempt fails, when the server
    sends nothing for `stall_timeout_s` seconds in total (default STALL_TIMEOUT_S), or when it sends an HTML page.
    `target` is where the caller caches the file (named in the error so the user can put it there by hand)."""
    stall_timeout_s = STALL_TIMEOUT_S if stall_timeout_s is None else stall_timeout_s
    budget_end = time.monotonic() + stall_timeout_s  # moved forward whenever bytes arrive
    last_error = "unknown error"
    if verbose:
        log(f"Downloading {url} ...")
    for attempt in range(1, num_attempts + 1):
        remaining = budget_end - time.monotonic()
        if remaining <= 0:
            last_error = f"no data received for {stall_timeout_s:g} s"
            break
        if attempt > 1 and verbose:
            log(f"Download of {url} failed ({last_error}); retrying ({attempt}/{num_attempts})")
        out.seek(0)
        out.truncate()
        try:
            with requests.get(url, stream=True, timeout=remaining) as response:
                response.raise_for_status()
                expected = int(response.headers.get("Content-Length", 0)) or None
                received = 0
                with tqdm(total=expected, unit="B", unit_scale=True, desc=_file_name(url)[:40],
                          disable=not verbose, leave=False) as bar:
                    for chunk in response.iter_content(CHUNK_BYTES):
                        if received == 0 and _looks_like_html(url, response.headers.get("Content-Type", ""), chunk):
                            raise DownloadError(
                                f"{url} answered with an HTML page (e.g. a sign-in, consent or error page), not the "
                                f"file {_file_name(url)}; nothing was cached. Check the link, or fetch the file in a "
                                f"browser and pass its local path (or save it as {target}).")
                        out.write(chunk)
                        received += len(chunk)
                        budget_end = time.monotonic() + stall_timeout_s
                        bar.update(len(chunk))
                if expected is not None and received != expected:
                    raise OSError(f"connection closed after {received} of {expected} bytes")
                return
        except requests.HTTPError as e:
            last_error = str(e)
            if e.response is not None and 400 <= e.response.status_code < 500:
                break  # a client error will not go away by retrying
        except DownloadError:
            raise
        except (requests.RequestException, OSError) as e:
            last_error = str(e)
            if isinstance(e, (requests.Timeout, requests.ConnectionError)) and time.monotonic() >= budget_end:
                last_error = f"no data received for {stall_timeout_s:g} s ({e})"
                break
    raise DownloadError(
        f"Could not download {url} ({last_error}). Fetch the file yourself (browser, or `curl -L -o FILE URL`) "
        f"and pass its local path instead of the URL, or save it as {target} so the cache finds it.")
