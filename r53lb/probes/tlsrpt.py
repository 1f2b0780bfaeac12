"""Read TLS-RPT reports (RFC 8460) dropped into a directory, gzip or not, within bounds of memory and time.

A file is read only when it is a regular file no larger than MAX_FILE_BYTES; a gzip file is
inflated to at most MAX_REPORT_BYTES (a gzip bomb stops there, with a reason); at most
MAX_FILES files, the newest first, within one deadline. A file that cannot be used is
skipped with a one-line reason; parsed reports are remembered by (path, size, mtime) so a
long-running controller reads each file once.
"""

from __future__ import annotations

import os
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..core.tlsrpt import MAX_REPORT_BYTES, Report, parse_report

__all__ = ["MAX_FILE_BYTES", "MAX_FILES", "Read", "read_reports", "inflate"]

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_FILES = 5000
_CACHE_SIZE = 20_000
_cache: "OrderedDict[tuple[str, int, int], Report | str]" = OrderedDict()


@dataclass
class Read:
    reports: list[Report] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "file: reason"
    error: str | None = None  # the directory itself could not be read: unknown


def inflate(data: bytes, limit: int = MAX_REPORT_BYTES) -> bytes:
    """gzip (by its magic number) inflated to at most `limit` bytes; anything else as it is."""
    if data[:2] != b"\x1f\x8b":
        return data
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise ValueError(f"not valid gzip: {e}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise ValueError(f"inflates past {limit // (1024 * 1024)} MiB (a gzip bomb?)")
    return out


def _one(path: Path, size: int) -> Report | str:
    if size > MAX_FILE_BYTES:
        return f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        return parse_report(inflate(data))
    except ValueError as e:
        return str(e)
    except OSError as e:
        return os.strerror(e.errno) if e.errno else str(e)


def read_reports(directory: Path, deadline: float = 10.0) -> Read:
    """Every usable report in `directory` (not its subdirectories), newest files first."""
    out = Read()
    started = time.monotonic()
    try:
        entries = []
        with os.scandir(directory) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                try:
                    if not e.is_file(follow_symlinks=False):
                        continue
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                entries.append((st.st_mtime_ns, st.st_size, e.path))
    except OSError as e:
        out.error = f"{directory}: {os.strerror(e.errno) if e.errno else e}"
        return out
    entries.sort(reverse=True)
    if len(entries) > MAX_FILES:
        out.skipped.append(f"{len(entries) - MAX_FILES} older files not read (more than {MAX_FILES})")
        entries = entries[:MAX_FILES]
    for mtime, size, path in entries:
        if time.monotonic() - started > deadline:
            out.skipped.append(f"reading stopped after {deadline:g}s; {len(entries)} files in the directory")
            break
        key = (path, size, mtime)
        got = _cache.get(key)
        if got is None:
            got = _one(Path(path), size)
            _cache[key] = got
            if len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        if isinstance(got, str):
            out.skipped.append(f"{os.path.basename(path)}: {got}")
        else:
            out.reports.append(got)
    return out
