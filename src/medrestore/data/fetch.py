"""Checksum-verified downloads and archive extraction that cannot escape its target folder."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from medrestore.io import InputError, atomic_path, sha256_file

MAX_EXTRACT_BYTES = 8 << 30
MAX_EXTRACT_FILES = 100_000


def download(url: str, dest: Path, sha256: str | None, *, retries: int = 3, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``: resumes a partial ``.part`` file, retries, verifies, renames.

    A checksum mismatch deletes the partial file and raises :class:`InputError`: a corrupted or
    tampered archive is never taken as the dataset.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for attempt in range(retries):
        try:
            _fetch_into(url, part, timeout)
            break
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last_error = exc
            time.sleep(min(2**attempt, 10) * 0.1)
    else:
        raise InputError(
            f"{url}: download failed after {retries} tries ({last_error}). Fix: check the network, or put "
            f"the files in the mirror folder (download.mirror in params.yaml)."
        )
    if sha256 is not None:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise InputError(
                f"{url}: checksum mismatch (expected sha256 {sha256}, got {got}); the partial file was deleted. "
                "Fix: retry; if it persists the server copy changed, so check the dataset's page."
            )
    os.replace(part, dest)
    return dest


def _fetch_into(url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resumed = have and getattr(resp, "status", 200) == 206
        with open(part, "ab" if resumed else "wb") as fh:
            shutil.copyfileobj(resp, fh, length=1 << 20)
            fh.flush()
            os.fsync(fh.fileno())


def _safe_target(root: Path, name: str) -> Path:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise InputError(f"archive member {name!r} has an absolute path. Fix: the archive is unsafe; do not use it.")
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()):
        raise InputError(f"archive member {name!r} escapes the target folder. Fix: the archive is unsafe; do not use it.")
    return target


def extract_archive(
    archive: Path, out_dir: Path, *, max_bytes: int = MAX_EXTRACT_BYTES, max_files: int = MAX_EXTRACT_FILES
) -> list[Path]:
    """Extract a zip or tar archive into ``out_dir`` (built atomically).

    Refuses absolute paths, ``..`` traversal, links of any kind, device files, more than
    ``max_files`` members and more than ``max_bytes`` of declared or actual content.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            _check_counts(archive, len(infos), sum(i.file_size for i in infos), max_files, max_bytes)
            return _extract_members(
                archive,
                out_dir,
                ((i.filename, i.is_dir(), stat.S_ISLNK(i.external_attr >> 16), lambda i=i: zf.open(i)) for i in infos),
                max_bytes,
            )
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            _check_counts(archive, len(members), sum(m.size for m in members), max_files, max_bytes)
            for m in members:
                if not (m.isfile() or m.isdir()):
                    raise InputError(
                        f"{archive}: member {m.name!r} is a link or special file. Fix: the archive is unsafe; do not use it."
                    )
            return _extract_members(
                archive,
                out_dir,
                ((m.name, m.isdir(), False, lambda m=m: tf.extractfile(m)) for m in members),
                max_bytes,
            )
    raise InputError(f"{archive}: not a zip or tar archive. Fix: delete it and download again.")


def _check_counts(archive: Path, count: int, size: int, max_files: int, max_bytes: int) -> None:
    if count > max_files:
        raise InputError(f"{archive}: {count} members, over the limit of {max_files}. Fix: the archive is unsafe or wrong.")
    if size > max_bytes:
        raise InputError(f"{archive}: declares {size} bytes, over the limit of {max_bytes}. Fix: the archive is unsafe or wrong.")


def _extract_members(archive: Path, out_dir: Path, members, max_bytes: int) -> list[Path]:
    from medrestore.io import atomic_dir

    written: list[Path] = []
    total = 0
    with atomic_dir(out_dir) as tmp:
        for name, is_dir, is_link, opener in members:
            if is_link:
                raise InputError(f"{archive}: member {name!r} is a symbolic link. Fix: the archive is unsafe; do not use it.")
            target = _safe_target(tmp, name)
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with opener() as src, open(target, "wb") as dst:
                while block := src.read(1 << 20):
                    total += len(block)
                    if total > max_bytes:
                        raise InputError(
                            f"{archive}: extracts to more than {max_bytes} bytes (an archive bomb?). Fix: do not use it."
                        )
                    dst.write(block)
            written.append(target.relative_to(tmp))
    return [out_dir / p for p in written]
