"""Fetching one URL into a file object for dnnlib.util.open_url: retries for transient failures (at most
SERVER_ERROR_ATTEMPTS for server errors, with exponential back-off), but one deadline for the whole download
(STALL_TIMEOUT_S without progress, whatever the number of attempts; progress is PROGRESS_BYTES more on the wire, so a
server trickling bytes cannot hold it open), redirect loops refused at once, gzip Content-Encoding decoded (others
refused), at most MAX_DOWNLOAD_BYTES, messages on stderr while it waits or retries, and a check that the server sent
the file rather than an HTML page, made before anything is cached.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.parse
import zlib
from typing import IO, Callable, Iterator

import requests
import urllib3
from tqdm import tqdm

CHUNK_BYTES = 1 << 16         # one socket read at most; the deadline is checked after every read
STALL_TIMEOUT_S = 120.0       # give up after this long without progress (over all attempts)
PROGRESS_BYTES = 1 << 16      # bytes that count as progress: slower than 64 KiB per STALL_TIMEOUT_S is a stall
READ_TIMEOUT_S = 30.0         # one socket read waits at most this long (the deadline is checked between reads)
SERVER_ERROR_ATTEMPTS = 4     # attempts while the server answers 5xx / 408 / 429 (it is down or asks us to wait)
RETRY_BACKOFF_S = 1.0         # wait after the first such answer; doubled after each further one (1, 2, 4 s)
MAX_REDIRECTS = 10
MAX_DOWNLOAD_BYTES = 2**32    # 4 GiB (decoded); the largest official StyleGAN2-ADA pickle is about 0.4 GB
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")
_HEAD_BYTES = 512             # the HTML check looks at this much of the start of the file


class DownloadError(OSError):
    """A URL could not be fetched; the message says how to provide the file by hand."""


class _Stalled(Exception):
    """The download made no progress before the deadline."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _file_name(url: str) -> str:
    return os.path.basename(urllib.parse.urlparse(url).path) or url


def _looks_like_html(url: str, content_type: str, head: bytes) -> bool:
    """An HTML page (a sign-in, consent or error page) where a non-HTML file was asked for."""
    if _file_name(url).lower().endswith((".html", ".htm")):
        return False
    return content_type.split(";")[0].strip().lower() == "text/html" or \
        head.lstrip()[:16].lower().startswith(_HTML_STARTS)


def _decoder(encoding: str, url: str, target: str) -> Callable[[bytes], Iterator[bytes]]:
    """Bytes on the wire -> bytes of the file, for the response's Content-Encoding (we ask for identity)."""
    if encoding in ("", "identity"):
        return lambda data: iter((data,))
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

        def inflate(data: bytes) -> Iterator[bytes]:  # bounded output per step: a gzip bomb cannot fill memory
            out = inflater.decompress(data, CHUNK_BYTES)
            yield out
            while inflater.unconsumed_tail:
                yield inflater.decompress(inflater.unconsumed_tail, CHUNK_BYTES)
        return inflate
    raise DownloadError(f"{url} was sent with Content-Encoding {encoding!r}, which is not supported (identity and "
                        f"gzip are); fetch the file by hand and pass its local path (or save it as {target})")


def fetch(url: str, out: IO[bytes], *, num_attempts: int, verbose: bool, target: str,
          stall_timeout_s: float | None = None, log: Callable[[str], None] = _stderr) -> None:
    """Stream `url` into `out` (rewound for each attempt); DownloadError when every attempt fails, when the download
    makes no progress for `stall_timeout_s` seconds in total (default STALL_TIMEOUT_S), when redirects loop, or when
    the server sends an HTML page. `target` is where the caller caches the file (named in the error so the user can
    put it there by hand)."""
    stall_timeout_s = STALL_TIMEOUT_S if stall_timeout_s is None else stall_timeout_s
    deadline = [time.monotonic() + stall_timeout_s]  # moved forward whenever the download makes progress
    last_error = "unknown error"
    server_errors = 0
    if verbose:
        log(f"Downloading {url} ...")
    with requests.Session() as session:
        session.max_redirects = MAX_REDIRECTS
        for attempt in range(1, num_attempts + 1):
            if attempt > 1:
                wait = RETRY_BACKOFF_S * 2 ** (server_errors - 1) if server_errors else 0.0
                wait = min(wait, max(0.0, deadline[0] - time.monotonic()))
                if verbose:
                    log(f"Download of {url} failed ({last_error}); retrying"
                        + (f" in {wait:g} s" if wait else "") + f" ({attempt}/{num_attempts})")
                _sleep(wait)
            remaining = deadline[0] - time.monotonic()
            if remaining <= 0:
                last_error = f"no data received for {stall_timeout_s:g} s"
                break
            out.seek(0)
            out.truncate()
            try:
                _fetch_once(session, url, out, min(remaining, READ_TIMEOUT_S, stall_timeout_s), stall_timeout_s,
                            deadline, verbose, target)
                return
            except requests.TooManyRedirects as e:
                last_error = f"more than {MAX_REDIRECTS} redirects, a redirect loop? ({e})"
                break
            except requests.HTTPError as e:
                last_error = str(e)
                status = e.response.status_code if e.response is not None else 0
                if 400 <= status < 500 and status not in (408, 429):
                    break  # a client error will not go away by retrying
                server_errors += 1
                if server_errors >= SERVER_ERROR_ATTEMPTS:
                    last_error += f"; gave up after {server_errors} such answers"
                    break
            except _Stalled as e:
                last_error = str(e)
                break
            except DownloadError:
                raise
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
                last_error = str(e)
                if time.monotonic() >= deadline[0]:
                    last_error = f"no data received for {stall_timeout_s:g} s ({e})"
                    break
    raise DownloadError(
        f"Could not download {url} ({last_error}). Fetch the file yourself (browser, or `curl -L -o FILE URL`) "
        f"and pass its local path instead of the URL, or save it as {target} so the cache finds it.")


def _fetch_once(session: requests.Session, url: str, out: IO[bytes], first_timeout: float, stall_timeout_s: float,
                deadline: list[float], verbose: bool, target: str) -> None:
    """One attempt: stream the response into `out`, reading at most CHUNK_BYTES per socket read and checking the
    no-progress deadline after each read."""
    read_timeout = min(READ_TIMEOUT_S, stall_timeout_s)
    with session.get(url, stream=True, timeout=(first_timeout, read_timeout),
                     headers={"Accept-Encoding": "identity"}) as response:
        response.raise_for_status()
        decode = _decoder(response.headers.get("Content-Encoding", "").strip().lower(), url, target)
        expected = int(response.headers.get("Content-Length", 0) or 0) or None  # bytes on the wire
        content_type = response.headers.get("Content-Type", "")
        raw = response.raw
        head, written, mark = b"", 0, 0
        with tqdm(total=expected, unit="B", unit_scale=True, desc=_file_name(url)[:40], disable=not verbose,
                  leave=False) as bar:
            while True:
                data = raw.read1(CHUNK_BYTES, decode_content=False)
                now, on_wire = time.monotonic(), raw.tell()
                if on_wire - mark >= PROGRESS_BYTES or (not data and on_wire > mark):
                    mark, deadline[0] = on_wire, now + stall_timeout_s
                elif now > deadline[0]:
                    raise _Stalled(f"too slow: less than {PROGRESS_BYTES} bytes received in {stall_timeout_s:g} s "
                                   f"({on_wire} in all)")
                bar.update(len(data))
                for piece in decode(data) if data else ():
                    if head is not None:  # the start of the file is held back until the HTML check has seen it
                        head += piece
                        if len(head) < _HEAD_BYTES:
                            continue
                        piece, head = head, None
                        _check_not_html(url, content_type, piece, target)
                    written += len(piece)
                    if written > MAX_DOWNLOAD_BYTES:
                        raise DownloadError(f"{url} is larger than {MAX_DOWNLOAD_BYTES} bytes, the most a download "
                                            f"may be; fetch it by hand and pass its local path")
                    out.write(piece)
                if not data:
                    break
        if head is not None:  # a file shorter than _HEAD_BYTES
            _check_not_html(url, content_type, head, target)
            out.write(head)
        if expected is not None and raw.tell() != expected:
            raise OSError(f"connection closed after {raw.tell()} of {expected} bytes")


def _check_not_html(url: str, content_type: str, head: bytes, target: str) -> None:
    if _looks_like_html(url, content_type, head):
        raise DownloadError(
            f"{url} answered with an HTML page (e.g. a sign-in, consent or error page), not the file "
            f"{_file_name(url)}; nothing was cached. Check the link, or fetch the file in a browser and pass its "
            f"local path (or save it as {target}).")
