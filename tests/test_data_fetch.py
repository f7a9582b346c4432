"""The network path and archive safety, for real: an HTTP server on 127.0.0.1 serving real archives.

Only loopback is ever contacted: the server binds 127.0.0.1 on an ephemeral port, and a guard
refuses any other connection for the duration of each test.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import re
import socket
import stat
import struct
import tarfile
import tempfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medrestore.core.io import InputError, read_image
from medrestore.data import fetch
from medrestore.data.fetch import download, extract_archive
from medrestore.data.sources import DATASETS, Archive, gather

CHASE_FILES = ["Image_01L.jpg", "Image_01L_1stHO.png", "Image_01L_2ndHO.png",
               "Image_02R.jpg", "Image_02R_1stHO.png", "Image_02R_2ndHO.png"]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """No test here may reach anything but 127.0.0.1, and retries do not sleep."""
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        if address[0] not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"test tried to reach {address[0]}: only loopback is allowed")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(fetch, "RETRY_BACKOFF_S", 0.0)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        srv: Server = self.server  # type: ignore[assignment]
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        body = srv.files.get(self.path)
        if body is None:
            self._status(404, b"not found")
            return
        if srv.fail_first > 0:
            srv.fail_first -= 1
            self._status(503, b"try later")
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and srv.ranges:
            start = int(m[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if srv.drop_after:  # send part of the body, then hang up (the header promised all of it)
            cut = srv.drop_after.pop(0)
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def _status(self, code: int, text: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)  # loopback, ephemeral port
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.fail_first = 0
        self.ranges = True
        self.drop_after: list[int] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def server():
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _zip(entries: dict[str, bytes], prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(prefix + name, data)
    return buf.getvalue()


def _tar(entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tf.addfile(info, io.BytesIO(entry[1]))
    return buf.getvalue()


@pytest.fixture(scope="module")
def chase_zip(chase_dir) -> bytes:
    """A real zip of six CHASE_DB1 files inside a top folder, as archives often are."""
    return _zip({name: (chase_dir / name).read_bytes() for name in CHASE_FILES}, prefix="CHASEDB1/")


def _point_chase_at(monkeypatch, url: str, archive_sha256: str | None) -> None:
    entry = dataclasses.replace(DATASETS["chase_db1"], url=url, archive_sha256=archive_sha256)
    monkeypatch.setitem(DATASETS, "chase_db1", entry)


def _gather_chase(tmp_path: Path, **kw):
    kw.setdefault("allow_partial", True)  # six files of the 28 images
    return gather(["chase_db1"], tmp_path / "out", mirror=tmp_path / "no-mirror", folder=tmp_path,
                  cache_dir=tmp_path / "cache", allow_network=True, **kw)


def _all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


# --------------------------------------------------------------------------- download + gather
def test_clean_download_extract_verify_gives_records_with_masks(tmp_path, monkeypatch, server, chase_zip, chase_dir):
    server.files["/96/1/CHASEDB1.zip"] = chase_zip
    _point_chase_at(monkeypatch, server.url("/96/1/CHASEDB1.zip"), hashlib.sha256(chase_zip).hexdigest())
    records = _gather_chase(tmp_path)
    assert [r.id for r in records] == ["chase_db1/Image_01L", "chase_db1/Image_02R"]
    for r in records:
        assert r.vessels.name == f"{r.image.stem}_1stHO.png" and r.vessels_2nd.name == f"{r.image.stem}_2ndHO.png"
        assert r.fov is None  # CHASE_DB1 ships no FOV masks
        assert r.image.read_bytes() == (chase_dir / r.image.name).read_bytes()
        assert read_image(r.vessels, "L").shape == read_image(r.image).shape[:2]
    assert records[0].as_dict(tmp_path / "out")["fov"] is None
    assert (tmp_path / "cache" / "chase_db1" / "CHASEDB1.zip").read_bytes() == chase_zip
    assert not list((tmp_path / "cache").rglob("*.part"))
    # a second run uses the verified cached archive: no new request
    n = len(server.requests)
    _gather_chase(tmp_path)
    assert len(server.requests) == n


def test_archive_checksum_mismatch_names_the_file_and_leaves_nothing(tmp_path, monkeypatch, server, chase_zip):
    server.files["/CHASEDB1.zip"] = chase_zip
    _point_chase_at(monkeypatch, server.url("/CHASEDB1.zip"), "0" * 64)
    with pytest.raises(InputError, match=r"CHASEDB1\.zip.*checksum mismatch.*partial file was deleted.*Fix"):
        _gather_chase(tmp_path)
    assert _all_files(tmp_path / "cache") == set()
    assert not (tmp_path / "out").exists() or _all_files(tmp_path / "out") == set()


def test_member_checksum_mismatch_names_the_member_and_leaves_no_copy(tmp_path, monkeypatch, server, chase_dir):
    entries = {name: (chase_dir / name).read_bytes() for name in CHASE_FILES}
    bad = bytearray(entries["Image_02R.jpg"])
    bad[2000] ^= 0xFF
    entries["Image_02R.jpg"] = bytes(bad)
    server.files["/CHASEDB1.zip"] = _zip(entries)
    _point_chase_at(monkeypatch, server.url("/CHASEDB1.zip"), None)  # archive checksum unknown: members still checked
    with pytest.raises(InputError, match=r"Image_02R\.jpg: checksum mismatch for dataset 'chase_db1'.*Fix: replace"):
        _gather_chase(tmp_path)
    assert not (tmp_path / "out" / "chase_db1" / "Image_02R.jpg").exists()


def test_dropped_connection_is_resumed_with_a_range_request(tmp_path, server, chase_zip):
    server.files["/a.zip"] = chase_zip
    server.drop_after = [50_000, 40_000]  # two hang-ups, each resumed where it stopped
    dest = download(server.url("/a.zip"), tmp_path / "a.zip", hashlib.sha256(chase_zip).hexdigest(), backoff=0)
    assert dest.read_bytes() == chase_zip
    assert [r for _, r in server.requests] == [None, "bytes=50000-", "bytes=90000-"]
    assert not (tmp_path / "a.zip.part").exists()


def test_a_server_without_range_support_is_read_again_from_the_start(tmp_path, server, chase_zip):
    server.files["/a.zip"] = chase_zip
    server.ranges = False
    server.drop_after = [30_000]
    dest = download(server.url("/a.zip"), tmp_path / "a.zip", hashlib.sha256(chase_zip).hexdigest(), backoff=0)
    assert dest.read_bytes() == chase_zip and len(server.requests) == 2


def test_a_part_file_resumed_across_runs_and_an_oversized_one_restarted(tmp_path, server, chase_zip):
    server.files["/a.zip"] = chase_zip
    server.drop_after = [10_000]
    with pytest.raises(InputError, match=r"a\.zip: download failed after 1 tries.*kept and the next run resumes"):
        download(server.url("/a.zip"), tmp_path / "a.zip", None, retries=1, backoff=0)
    assert (tmp_path / "a.zip.part").stat().st_size == 10_000
    assert download(server.url("/a.zip"), tmp_path / "a.zip", None, backoff=0).read_bytes() == chase_zip
    assert server.requests[-1][1] == "bytes=10000-"
    # a .part longer than the file (a different file): the server answers 416, the download starts over
    (tmp_path / "b.zip.part").write_bytes(b"x" * (len(chase_zip) + 10))
    assert download(server.url("/a.zip"), tmp_path / "b.zip", None, backoff=0).read_bytes() == chase_zip
    # a .part that is already complete (the rename was interrupted): the 416 says so, nothing is fetched again
    (tmp_path / "c.zip.part").write_bytes(chase_zip)
    n = len(server.requests)
    assert download(server.url("/a.zip"), tmp_path / "c.zip", None, backoff=0).read_bytes() == chase_zip
    assert len(server.requests) == n + 1 and not (tmp_path / "c.zip.part").exists()


def test_failing_server_is_retried_then_succeeds(tmp_path, server, chase_zip):
    server.files["/a.zip"] = chase_zip
    server.fail_first = 2  # two 503s
    dest = download(server.url("/a.zip"), tmp_path / "a.zip", hashlib.sha256(chase_zip).hexdigest(), backoff=0)
    assert dest.read_bytes() == chase_zip and len(server.requests) == 3


def test_retries_run_out_with_an_error_naming_the_url(tmp_path, server, chase_zip):
    server.files["/a.zip"] = chase_zip
    server.fail_first = 10
    with pytest.raises(InputError, match=r"127\.0\.0\.1.*/a\.zip: download failed after 3 tries.*503.*Fix"):
        download(server.url("/a.zip"), tmp_path / "a.zip", None, retries=3, backoff=0)
    assert len(server.requests) == 3 and not (tmp_path / "a.zip").exists()


def test_not_found_is_not_retried(tmp_path, server):
    with pytest.raises(InputError, match=r"/gone\.zip: the server answered HTTP 404.*Fix"):
        download(server.url("/gone.zip"), tmp_path / "gone.zip", None, backoff=0)
    assert len(server.requests) == 1 and _all_files(tmp_path) == set()


def test_only_http_urls_are_fetched(tmp_path):
    with pytest.raises(InputError, match=r"file:///etc/passwd: only http and https"):
        download("file:///etc/passwd", tmp_path / "x", None)


def test_multi_archive_dataset_over_the_network(tmp_path, monkeypatch, server, chase_dir):
    """STARE's layout: images and each observer's labels in separate tars of gzipped PPMs."""
    img = read_image(chase_dir / "Image_01L.jpg")[:96, :80]
    lab = read_image(chase_dir / "Image_01L_1stHO.png", "L")[:96, :80]

    def ppm_gz(array: np.ndarray) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PPM")
        return gzip.compress(buf.getvalue(), mtime=0)

    server.files["/stare-images.tar"] = _tar([("im0001.ppm.gz", ppm_gz(img))])
    server.files["/labels-ah.tar"] = _tar([("im0001.ah.ppm.gz", ppm_gz(lab))])
    server.files["/labels-vk.tar"] = _tar([("im0001.vk.ppm.gz", ppm_gz(255 - lab))])
    entry = dataclasses.replace(
        DATASETS["stare"], url=server.url("/stare-images.tar"),
        extra_archives=(Archive(server.url("/labels-ah.tar")), Archive(server.url("/labels-vk.tar"))),
    )
    monkeypatch.setitem(DATASETS, "stare", entry)
    kw = {"mirror": tmp_path / "none", "folder": tmp_path, "cache_dir": tmp_path / "cache", "allow_network": True}
    with pytest.raises(InputError, match=r"'stare' has no pinned checksums.*allow_unverified"):
        gather(["stare"], tmp_path / "refused", **kw)
    with pytest.warns(UserWarning, match="unverified"):
        (rec,) = gather(["stare"], tmp_path / "out", allow_unverified=True, **kw)
    assert rec.id == "stare/im0001" and rec.fov is None
    assert np.array_equal(read_image(rec.image), img)
    assert np.array_equal(read_image(rec.vessels, "L"), lab)
    assert np.array_equal(read_image(rec.vessels_2nd, "L"), 255 - lab)


# --------------------------------------------------------------------------- unsafe archives
def _refused(tmp_path: Path, data: bytes, match: str, *, suffix: str = ".zip", **limits) -> None:
    """``data`` must be refused with ``match``, leaving only the archive and the untouched sentinel."""
    work = tmp_path / "work"
    work.mkdir(parents=True)
    (work / "sentinel.txt").write_text("keep")
    archive = work / f"evil{suffix}"
    archive.write_bytes(data)
    before = _all_files(tmp_path)
    with pytest.raises(InputError, match=match):
        extract_archive(archive, work / "deep" / "out", **limits)
    assert _all_files(tmp_path) == before  # nothing written anywhere, nothing half-extracted
    assert not (work / "deep" / "out").exists() and not list((work / "deep").glob(".out.*"))
    assert (work / "sentinel.txt").read_text() == "keep"


def _zip_raw(infos: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info, data in infos:
            zf.writestr(info, data)
    return buf.getvalue()


def test_zip_path_traversal_is_refused(tmp_path):
    _refused(tmp_path, _zip({"ok.txt": b"1", "../x": b"pwned"}), r"evil\.zip: member '\.\./x' escapes")
    _refused(tmp_path / "b", _zip({"a/../../x": b"pwned"}), "escapes the target")


def test_absolute_paths_are_refused(tmp_path):
    _refused(tmp_path, _zip_raw([(zipfile.ZipInfo("/tmp/medrestore-evil"), b"pwned")]), "absolute path")
    _refused(tmp_path / "b", _zip_raw([(zipfile.ZipInfo("C:/evil"), b"pwned")]), "absolute path")
    _refused(tmp_path / "c", _tar([("/tmp/medrestore-evil", b"pwned")]), "absolute path", suffix=".tar")


def test_zip_symlinks_are_refused(tmp_path):
    link = zipfile.ZipInfo("link")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    data = _zip_raw([(link, b"../../.."), (zipfile.ZipInfo("link/escaped.txt"), b"pwned")])
    _refused(tmp_path, data, r"member 'link' is a symbolic link")


def test_tar_symlinks_hardlinks_and_devices_are_refused(tmp_path):
    sym = tarfile.TarInfo("link")
    sym.type, sym.linkname = tarfile.SYMTYPE, "../../.."
    _refused(tmp_path / "a", _tar([sym, ("link/escaped.txt", b"pwned")]), r"'link' is a symbolic link", suffix=".tar")
    hard = tarfile.TarInfo("passwd")
    hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/passwd"
    _refused(tmp_path / "b", _tar([("ok.txt", b"1"), hard]), r"'passwd' is a hard link", suffix=".tar")
    dev = tarfile.TarInfo("null")
    dev.type = tarfile.CHRTYPE
    _refused(tmp_path / "c", _tar([dev]), "special file", suffix=".tar")
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    _refused(tmp_path / "d", _tar([fifo], mode="w:gz"), "special file", suffix=".tar.gz")


def test_too_many_files_is_refused(tmp_path):
    _refused(tmp_path, _zip({f"f{i}.txt": b"x" for i in range(6)}), "more than 5 members", max_files=5)
    _refused(tmp_path / "t", _tar([(f"f{i}", b"x") for i in range(6)]), "more than 5 members", suffix=".tar",
             max_files=5)


def test_archive_bombs_are_refused(tmp_path):
    zeros = b"\0" * 200_000  # deflates to a few hundred bytes
    bomb = _zip({"a.bin": b"1", "z.bin": zeros})
    assert len(bomb) < 2_000
    _refused(tmp_path / "a", bomb, "declares more than 100000 bytes", max_bytes=100_000)
    _refused(tmp_path / "b", _tar([("z.bin", zeros)], mode="w:gz"), "declares more than", suffix=".tgz",
             max_bytes=100_000)
    # a header that under-declares: zipfile stops at the declared size and the CRC fails; refused, nothing left
    lying = bytearray(_zip({"z.bin": zeros}))
    struct.pack_into("<I", lying, 22, 1000)  # local header's uncompressed size
    central = lying.find(b"PK\x01\x02")
    struct.pack_into("<I", lying, central + 24, 1000)  # central directory's
    _refused(tmp_path / "c", bytes(lying), r"evil\.zip: the archive is corrupt", max_bytes=100_000)


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicates_corrupt_and_non_archives_are_refused(tmp_path):
    dup = _zip_raw([(zipfile.ZipInfo("a.txt"), b"good"), (zipfile.ZipInfo("a.txt"), b"evil")])
    _refused(tmp_path / "a", dup, "'a.txt' appears twice")
    good = _zip({"a.txt": b"hello" * 1000})
    _refused(tmp_path / "b", good[: len(good) // 2], r"not a zip or tar archive\. Fix")
    _refused(tmp_path / "c", b"<html>login page</html>", r"not a zip or tar archive\. Fix")


def test_a_refused_archive_leaves_the_previous_extraction_in_place(tmp_path):
    ok = tmp_path / "ok.zip"
    ok.write_bytes(_zip({"d/a.txt": b"1"}))
    out = tmp_path / "out"
    assert extract_archive(ok, out) == [out / "d" / "a.txt"]
    evil = tmp_path / "evil.zip"
    evil.write_bytes(_zip({"d/b.txt": b"2", "../x": b"3"}))
    with pytest.raises(InputError):
        extract_archive(evil, out)
    assert _all_files(out) == {"d/a.txt"} and not (tmp_path / "x").exists()


def test_safe_archives_extract_exactly(tmp_path):
    entries = {"top/a.txt": b"a", "top/sub/b.bin": bytes(range(256)), "./c.txt": b"c"}
    for suffix, data in ((".zip", _zip(entries)), (".tar.gz", _tar(list(entries.items()), mode="w:gz"))):
        archive = tmp_path / f"ok{suffix}"
        archive.write_bytes(data)
        out = tmp_path / f"out{suffix}"
        got = extract_archive(archive, out, max_files=3, max_bytes=258)
        assert sorted(p.relative_to(out).as_posix() for p in got) == ["c.txt", "top/a.txt", "top/sub/b.bin"]
        assert (out / "top" / "sub" / "b.bin").read_bytes() == bytes(range(256))


# --------------------------------------------------------------------------- fuzz
_component = st.sampled_from(["a", "b", "..", ".", "", "~", "C:", "c:", "\\", "..\\..", "é", "x y", "\x00z", "*"])
_name = st.lists(_component, min_size=1, max_size=5).map("/".join) | st.text(
    alphabet=st.sampled_from(list("ab./\\:~ \x00é")), min_size=0, max_size=12
)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(_name, min_size=1, max_size=4), as_tar=st.booleans())
def test_fuzzed_member_names_never_land_outside_the_target(names, as_tar):
    with tempfile.TemporaryDirectory() as base:
        base = Path(base)
        archive = base / ("a.tar" if as_tar else "a.zip")
        if as_tar:
            infos = []
            for i, name in enumerate(names):
                try:
                    info = tarfile.TarInfo(name)
                    info.size = 1
                    infos.append((info, bytes([i])))
                except ValueError:
                    pass
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
                for info, data in infos:
                    tf.addfile(info, io.BytesIO(data))
            archive.write_bytes(buf.getvalue())
        else:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                for i, name in enumerate(names):
                    try:
                        zf.writestr(zipfile.ZipInfo(name), bytes([i]))
                    except IndexError:  # zipfile cannot write an empty name (a NUL cuts the name short)
                        pass
            archive.write_bytes(buf.getvalue())
        target = base / "t" / "out"
        try:
            written = extract_archive(archive, target)
        except InputError:
            assert not target.exists()
            written = []
        outside = {p for p in base.rglob("*") if not p.is_dir()} - {archive}
        assert all(p.resolve().is_relative_to(target.resolve()) for p in outside), outside
        assert all(p.is_file() and not p.is_symlink() for p in outside)
        assert set(written) == outside
        assert {p.name for p in (base / "t").iterdir()} <= {"out"}
