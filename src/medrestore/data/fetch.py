"""Checksum-verified resumable downloads and archive extraction that cannot escape its target folder.

:func:`download` fetches into ``<dest>.part`` and only renames onto ``dest`` once the whole body
arrived (its length checked against the server's) and, when a checksum is given, it matches. A
dropped connection is resumed with an HTTP ``Range`` request on the next try; a server that
ignores ``Range`` is read again from the start.

:func:`extract_archive` reads zip and tar (plain or compressed) archives member by member into
a temporary sibling of the target and swaps it into place only when every member was accepted,
so a refused or corrupt archive leaves nothing behind and nothing is ever written outside the
target. It refuses absolute paths, ``..`` components, links of every kind, device files,
duplicate names, more than ``max_files`` members and more than ``max_bytes`` of declared or
actual content.
"""

from __future__ import annotations

import http.client
import os
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from medrestore.core.io import InputError, atomic_dir, sha256_file

MAX_EXTRACT_BYTES = 8 << 30
MAX_EXTRACT_FILES = 100_000
RETRY_BACKOFF_S = 1.0  # first pause between tries; doubles each try, capped at 30 s
CHUNK = 1 << 20

_UNSAFE = "Fix: the archive is unsafe; do not use it (delete it and get the dataset from its official page)."
_CORRUPT = "Fix: delete it and download again; if it persists, get the dataset from its official page."


class _Retryable(Exception):
    """A transient failure (dropped connection, short body, server error): try again."""


# --------------------------------------------------------------------------- download
def download(
    url: str,
    dest: Path,
    sha256: str | None,
    *,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float | None = None,
) -> Path:
    """Download ``url`` to ``dest``: resumes a partial ``.part`` file, retries, verifies, renames.

    ``dest`` appears only complete: its length matched the server's and, when ``sha256`` is
    given, its checksum. A checksum mismatch deletes the partial file and raises
    :class:`InputError`: a corrupted or tampered archive is never taken as the dataset. After
    ``retries`` failed tries the ``.part`` file is kept so that the next run resumes it.
    Client errors (404, 403, ...) are not retried. Only ``http`` and ``https`` URLs are fetched.
    """
    dest = Path(dest)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise InputError(f"{url}: only http and https downloads are supported. Fix: use an https address, or put "
                         "the files in the mirror folder (download.mirror in params.yaml).")
    if dest.is_file():
        if sha256 is None or sha256_file(dest) == sha256:
            return dest
        dest.unlink()  # a stale or damaged copy: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    pause = RETRY_BACKOFF_S if backoff is None else backoff
    last_error: BaseException | None = None
    for attempt in range(max(1, retries)):
        if attempt:
            time.sleep(min(pause * 2 ** (attempt - 1), 30.0))
        try:
            _fetch_into(url, part, timeout)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # the range asked for starts at or past the end
                total = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
                if part.exists() and total.isdigit() and int(total) == part.stat().st_size:
                    break  # the partial file was already complete
                part.unlink(missing_ok=True)  # longer than the file: not this file; start again
                last_error = exc
                continue
            if 400 <= exc.code < 500 and exc.code not in (408, 425, 429):
                raise InputError(
                    f"{url}: the server answered HTTP {exc.code} ({exc.reason}). Fix: check the address in the "
                    "dataset's registry entry against the dataset's page, or put the files in the mirror folder "
                    "(download.mirror in params.yaml)."
                ) from exc
            last_error = exc
        except (_Retryable, urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            last_error = exc
    else:
        kept = f" The partial file {part} is kept and the next run resumes it." if part.exists() else ""
        raise InputError(
            f"{url}: download failed after {max(1, retries)} tries ({last_error}).{kept} Fix: check the network "
            "and run again, or put the files in the mirror folder (download.mirror in params.yaml)."
        )
    if sha256 is not None:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise InputError(
                f"{dest.name} (from {url}): checksum mismatch (expected sha256 {sha256}, got {got}); the "
                "partial file was deleted. Fix: run again; if it persists the server's copy changed, so check "
                "the dataset's page and update archive_sha256 in its registry entry only after checking the files."
            )
    os.replace(part, dest)
    return dest


def _fetch_into(url: str, part: Path, timeout: float) -> None:
    """One try: append to ``part`` from where it stops (or start again), checking the body's length."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        status = getattr(resp, "status", 200)
        if status >= 300:
            raise _Retryable(f"unexpected HTTP status {status}")
        start = 0
        if have and status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != have:  # the server resumed somewhere else: start again from zero next try
                part.unlink(missing_ok=True)
                raise _Retryable(f"server resumed at byte {start}, not {have}")
            expected = None if total is None else total - start
        else:
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
        got = 0
        from tqdm.auto import tqdm

        # a progress bar on a terminal only (tqdm's disable=None), quiet in CI and in logs
        total = None if expected is None else have + expected
        bar_args = {"unit": "B", "unit_scale": True, "desc": Path(part.name).stem, "disable": None, "leave": False}
        with open(part, "ab" if start else "wb") as fh, tqdm(total=total, initial=have, **bar_args) as bar:
            while block := resp.read(CHUNK):
                fh.write(block)
                got += len(block)
                bar.update(len(block))
            fh.flush()
            os.fsync(fh.fileno())
    # http.client returns a short body without an error when the connection drops: check it here.
    if expected is not None and got != expected:
        raise _Retryable(f"connection dropped after {start + got} bytes of {start + expected}")


def _content_range(value: str | None) -> tuple[int, int | None]:
    """Parse ``bytes START-END/TOTAL`` (TOTAL may be ``*``)."""
    try:
        unit, rest = (value or "").split(" ", 1)
        span, total = rest.split("/", 1)
        start = int(span.split("-", 1)[0])
        if unit.strip().lower() != "bytes":
            raise ValueError(unit)
        return start, None if total.strip() == "*" else int(total)
    except ValueError as exc:
        raise _Retryable(f"bad Content-Range header {value!r}") from exc


# --------------------------------------------------------------------------- extraction
def _safe_parts(archive: Path, name: str) -> tuple[str, ...]:
    """The path components of member ``name``; refuses anything that could leave the target."""
    if not name or "\x00" in name or "\\" in name:
        raise InputError(f"{archive}: member {name!r} has an empty name, a NUL or a backslash. {_UNSAFE}")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InputError(f"{archive}: member {name!r} has an absolute path. {_UNSAFE}")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise InputError(f"{archive}: member {name!r} escapes the target folder ('..'). {_UNSAFE}")
    return parts


# A member: (name, kind, declared size, opener). kind: "file", "dir" or a description of why not.
Member = tuple[str, str, int, Callable[[], IO[bytes]]]


def _zip_members(zf: zipfile.ZipFile) -> Iterator[Member]:
    for info in zf.infolist():
        mode = info.external_attr >> 16 if info.create_system == 3 else 0  # Unix mode bits, when made on Unix
        if stat.S_ISLNK(mode):
            kind = "a symbolic link"
        elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            kind = "a special file"
        else:
            kind = "dir" if info.filename.endswith("/") else "file"
        yield info.filename, kind, info.file_size, lambda info=info: zf.open(info)


def _tar_members(tf: tarfile.TarFile) -> Iterator[Member]:
    for m in tf:
        if m.issym():
            kind = f"a symbolic link (to {m.linkname!r})"
        elif m.islnk():
            kind = f"a hard link (to {m.linkname!r})"
        elif m.isdir():
            kind = "dir"
        elif m.isfile():
            kind = "file"
        else:
            kind = "a device, FIFO or other special file"
        yield m.name, kind, m.size, lambda m=m: tf.extractfile(m)


def extract_archive(
    archive: Path, out_dir: Path, *, max_bytes: int = MAX_EXTRACT_BYTES, max_files: int = MAX_EXTRACT_FILES
) -> list[Path]:
    """Extract a zip or tar archive into ``out_dir`` (built atomically; a previous ``out_dir`` is replaced).

    Refuses absolute paths, ``..`` traversal, links of any kind, device files, duplicate names,
    more than ``max_files`` members and more than ``max_bytes`` of declared or actual content.
    Every refusal and every corrupt archive raises :class:`InputError` naming the archive, and
    leaves ``out_dir`` as it was. Returns the extracted files.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    if not archive.is_file():
        raise InputError(f"{archive}: no such archive. Fix: download it again.")
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                return _extract_members(archive, out_dir, _zip_members(zf), max_bytes, max_files)
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                return _extract_members(archive, out_dir, _tar_members(tf), max_bytes, max_files)
    except InputError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, zlib.error, EOFError, NotImplementedError,
            RuntimeError, ValueError, OSError) as exc:
        raise InputError(
            f"{archive}: the archive is corrupt or could not be extracted ({exc}). Fix: check the free disk space "
            f"in {out_dir.parent}; otherwise delete the archive and download it again."
        ) from exc
    raise InputError(f"{archive}: not a zip or tar archive. {_CORRUPT}")


def _extract_members(archive: Path, out_dir: Path, members: Iterator[Member], max_bytes: int,
                     max_files: int) -> list[Path]:
    written: list[Path] = []
    seen: dict[tuple[str, ...], str] = {}
    count = declared = total = 0
    with atomic_dir(out_dir) as tmp:
        for name, kind, size, opener in members:
            count += 1
            if count > max_files:
                raise InputError(f"{archive}: more than {max_files} members (an archive bomb?). {_UNSAFE}")
            if kind not in ("file", "dir"):
                raise InputError(f"{archive}: member {name!r} is {kind}. {_UNSAFE}")
            parts = _safe_parts(archive, name)
            if kind == "file" and not parts:
                raise InputError(f"{archive}: member {name!r} is a file without a name. {_UNSAFE}")
            if parts in seen and not (kind == seen[parts] == "dir"):
                raise InputError(f"{archive}: member {name!r} appears twice. {_UNSAFE}")
            seen[parts] = kind
            declared += max(0, size)
            if declared > max_bytes:
                raise InputError(
                    f"{archive}: declares more than {max_bytes} bytes of content (an archive bomb?). {_UNSAFE}"
                )
            target = tmp.joinpath(*parts)
            if kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with opener() as src, open(target, "xb") as dst:
                while block := src.read(CHUNK):
                    total += len(block)
                    if total > max_bytes:
                        raise InputError(
                            f"{archive}: extracts to more than {max_bytes} bytes (an archive bomb?). {_UNSAFE}"
                        )
                    dst.write(block)
            written.append(Path(*parts))
    return [out_dir / p for p in written]
