"""Registry of source datasets and the download stage's gathering of them into one manifest.

Registering a dataset is one :class:`Dataset` entry in ``DATASETS`` (the built-in scikit-image
samples included); ``folder`` (the user's own images) is the only source outside it. Each
source image keeps an id (``dataset/name``), its dataset, its vessel masks when the dataset has
them and its field-of-view (FOV) mask when the dataset ships one.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import os
import re
import urllib.parse
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from medrestore.core.io import (
    InputError,
    list_images,
    read_image,
    read_mask,
    sha256_file,
    write_png_atomic,
)
from medrestore.data.fetch import download, extract_archive

MAX_ROOT_DEPTH = 3  # how deep below the mirror folder / extracted archive the dataset's root may sit
MAX_GUNZIP_BYTES = 256 << 20  # one decompressed STARE file; far above the real 1.3 MB
CHECKSUMS_PACKAGE = "src/medrestore/data/checksums"


class UnverifiedFilesWarning(UserWarning):
    """Files of a registered dataset were left out (or, with ``allow_unverified``, used) unverified."""


class IncompleteDatasetWarning(UserWarning):
    """Pinned files of a registered dataset are missing and ``allow_partial`` let it be used without them."""


@dataclass(frozen=True)
class SourceImage:
    id: str
    dataset: str
    image: Path
    vessels: Path | None = None
    vessels_2nd: Path | None = None
    fov: Path | None = None
    subject: str | None = None  # the person photographed: images of one subject never straddle splits

    def as_dict(self, root: Path) -> dict:
        def rel(p):
            return p.relative_to(root).as_posix() if p is not None else None

        return {
            "id": self.id,
            "dataset": self.dataset,
            "subject": self.subject or self.id,
            "image": rel(self.image),
            "vessels": rel(self.vessels),
            "vessels_2nd": rel(self.vessels_2nd),
            "fov": rel(self.fov),
            "sha256": sha256_file(self.image),
        }


@dataclass(frozen=True)
class Archive:
    """One downloadable archive of a dataset; ``sha256`` is None when it is not known."""

    url: str
    sha256: str | None = None


@dataclass(frozen=True)
class Dataset:
    """One registered source: where it comes from, its terms, the files it holds and how to read them.

    Fields:

    - ``url``: direct download of the dataset's archive (zip or tar), or None when there is none
      (registration required, as for DRIVE): the files must then be put in the mirror folder.
      ``archive_sha256`` is that archive's checksum, None when unknown; ``extra_archives`` are
      further archives of the same dataset (STARE ships its images and each observer's labels
      as separate tars). ``homepage`` is the dataset's public page.
    - ``files``: glob patterns (``/``-separated, matched per path component, case-insensitive)
      of the files the dataset holds, relative to its root folder. Only files named by a pattern
      or by the checksum list are copied; the root is found as the folder (up to
      ``MAX_ROOT_DEPTH`` levels below ``<mirror>/<name>`` or the extracted archive) holding most
      of them, so ``DRIVE/training/...`` and ``training/...`` both work.
    - ``checksums_file``: the dataset's per-file SHA-256 list in ``medrestore/data/checksums/``
      (``digest  relative/path`` lines, as ``sha256sum`` writes them), or None when the
      checksums are not known. These per-file checksums are the ground truth: the archive's
      checksum only saves downloading and unpacking a damaged archive.
    - ``parse``: reads the copied folder's layout into :class:`SourceImage` records (vessel masks
      and, where shipped, FOV masks). It may write converted copies beside the originals
      (STARE's gzipped PPMs become PNGs).
    - ``skimage``: for built-in samples, the ``skimage.data`` functions whose images are the
      dataset; nothing is downloaded or verified (the pinned scikit-image wheel ships them).

    Verification policy: every file copied from a dataset is hashed as it is copied. A file whose
    checksum is listed and does not match is an :class:`InputError` (name, expected and actual
    digest, fix), always. A file with no listed checksum (every file when ``checksums_file`` is
    None) is *unverified*: it is left out, with an :class:`UnverifiedFilesWarning`, unless the
    caller passes ``allow_unverified=True`` (``download.allow_unverified`` in params.yaml). If
    that leaves nothing, the dataset is refused with an :class:`InputError` that says how to pin
    the checksums or opt in. When unverified files are used, their digests are written to
    ``<out>/<name>/SHA256SUMS`` (and each image's to the manifest), so the copy that was used is
    on record and can be pinned by copying that file to ``checksums/<name>.sha256``.
    CHASE_DB1 has pinned checksums for all 28 images and both observers' masks, so it is strict:
    mismatches fail, and a file beyond the pinned list is left out unless opted in.
    """

    name: str
    description: str
    url: str | None
    licence: str
    citation: str
    parse: Callable[[Path], list[SourceImage]] = field(repr=False)
    checksums_file: str | None = None
    archive_sha256: str | None = None
    homepage: str | None = None
    files: tuple[str, ...] = ()
    extra_archives: tuple[Archive, ...] = ()
    skimage: tuple[str, ...] = ()
    modality: str = "fundus"
    test_subjects: tuple[str, ...] = ()  # the published split's test subjects (``patchify.split: standard``)

    def archives(self) -> tuple[Archive, ...]:
        first = () if self.url is None else (Archive(self.url, self.archive_sha256),)
        return first + tuple(self.extra_archives)

    def checksums(self) -> dict[str, str] | None:
        """``{relative path: sha256}``, or None when this dataset's checksums are not known."""
        if self.checksums_file is None:
            return None
        where = f"{CHECKSUMS_PACKAGE}/{self.checksums_file}"
        try:
            text = resources.files("medrestore.data").joinpath("checksums", self.checksums_file).read_text()
        except FileNotFoundError as exc:
            raise InputError(f"{where}: missing. Fix: restore it from git, or set checksums_file=None.") from exc
        out: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
                raise InputError(f"{where}:{number}: not a 'sha256  path' line. Fix: regenerate it with sha256sum.")
            out[parts[1].strip().lstrip("*")] = parts[0].lower()
        return out

    def expects(self, rel: str, known: dict[str, str] | None = None) -> bool:
        """Whether ``rel`` (a ``/``-separated path below the dataset's root) is one of its files."""
        return (known is not None and rel in known) or any(_match(rel, pattern) for pattern in self.files)


def _match(rel: str, pattern: str) -> bool:
    """Glob match per path component (``*`` never crosses a ``/``), ignoring case (``.JPG``)."""
    parts, pats = rel.lower().split("/"), pattern.lower().split("/")
    return len(parts) == len(pats) and all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pats))


def _glob(folder: Path, pattern: str) -> list[Path]:
    """Files under ``folder`` whose relative path matches ``pattern`` (see :func:`_match`), sorted."""
    found = []
    for rel in _walk(folder):
        if _match(rel, pattern):
            found.append(folder / rel)
    return sorted(found)


def _find(folder: Path, rel: str) -> Path | None:
    """``folder/rel`` ignoring case, or None."""
    if (folder / rel).is_file():
        return folder / rel
    hits = _glob(folder, glob_escape(rel))
    return hits[0] if hits else None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _walk(folder: Path) -> list[str]:
    """Relative ``/`` paths of the files below ``folder``, skipping hidden entries and ``__MACOSX``."""
    out = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        base = Path(here).relative_to(folder)
        out += [(base / f).as_posix() for f in sorted(files) if not f.startswith(".")]
    return out


# --------------------------------------------------------------------------- layout parsers
def _parse_chase(folder: Path) -> list[SourceImage]:
    out = []
    for img in _glob(folder, "Image_*.jpg"):
        stem = img.stem
        out.append(
            SourceImage(
                id=f"chase_db1/{stem}",
                dataset="chase_db1",
                image=img,
                subject=f"chase_db1/{stem[len('Image_'):-1]}",  # Image_03L and Image_03R: one child's two eyes
                vessels=_find(folder, f"{stem}_1stHO.png"),
                vessels_2nd=_find(folder, f"{stem}_2ndHO.png"),
            )
        )
    return out


def _parse_drive(folder: Path) -> list[SourceImage]:
    """``{training,test}/images/NN_<split>.tif``, ``1st_manual/NN_manual1.gif``,
    ``2nd_manual/NN_manual2.gif`` (test only) and ``mask/NN_<split>_mask.gif`` (FOV)."""
    out = []
    for split in ("training", "test"):
        for img in _glob(folder, f"{split}/images/*_{split}.tif"):
            number = img.stem.split("_")[0]
            out.append(
                SourceImage(
                    id=f"drive/{img.stem}",
                    dataset="drive",
                    image=img,
                    vessels=_find(folder, f"{split}/1st_manual/{number}_manual1.gif"),
                    vessels_2nd=_find(folder, f"{split}/2nd_manual/{number}_manual2.gif"),
                    fov=_find(folder, f"{split}/mask/{number}_{split}_mask.gif"),
                )
            )
    return out


def _parse_hrf(folder: Path) -> list[SourceImage]:
    """``images/NN_{h,g,dr}.jpg`` (the DR ones ``.JPG``), ``manual1/NN_x.tif``, ``mask/NN_x_mask.tif`` (FOV)."""
    out = []
    for img in _glob(folder, "images/*.jpg"):
        stem = img.stem
        out.append(
            SourceImage(
                id=f"hrf/{stem}",
                dataset="hrf",
                image=img,
                vessels=_find(folder, f"manual1/{stem}.tif"),
                fov=_find(folder, f"mask/{stem}_mask.tif"),
            )
        )
    return out


def _parse_stare(folder: Path) -> list[SourceImage]:
    """``imNNNN.ppm.gz`` images with ``imNNNN.ah.ppm.gz`` (Hoover) and ``imNNNN.vk.ppm.gz``
    (Kouznetsova) vessel labels; plain ``.ppm`` accepted too. Written beside them as PNGs."""
    out = []
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if re.fullmatch(r"im\d{4}\.ppm(\.gz)?", p.name, re.IGNORECASE):
            found.setdefault(p.name.split(".")[0].lower(), p)  # a .ppm beside its .ppm.gz is the same image
    for stem, img in sorted(found.items()):
        image = folder / f"{stem}.png"
        write_png_atomic(image, _read_ppm(img, "RGB"))
        labels = []
        for observer in ("ah", "vk"):
            src = _find(folder, f"{stem}.{observer}.ppm.gz") or _find(folder, f"{stem}.{observer}.ppm")
            if src is None:
                labels.append(None)
                continue
            dest = folder / f"{stem}.{observer}.png"
            write_png_atomic(dest, _read_ppm(src, "L"))
            labels.append(dest)
        out.append(SourceImage(id=f"stare/{stem}", dataset="stare", image=image, vessels=labels[0],
                               vessels_2nd=labels[1]))
    return out


def _read_ppm(path: Path, mode: str) -> np.ndarray:
    """A (possibly gzipped) PPM/PGM as uint8, refusing gzip bombs."""
    fix = "Fix: replace it with the dataset's original file."
    data = path.read_bytes()
    if path.suffix.lower() == ".gz":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
                data = gz.read(MAX_GUNZIP_BYTES + 1)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: not a valid gzip file ({exc}). {fix}") from exc
        if len(data) > MAX_GUNZIP_BYTES:
            raise InputError(f"{path}: decompresses to more than {MAX_GUNZIP_BYTES} bytes. {fix}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert(mode), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: not a readable PPM image ({exc}). {fix}") from exc


def _parse_pngs(folder: Path) -> list[SourceImage]:
    return [SourceImage(id=f"{folder.name}/{p.stem}", dataset=folder.name, image=p) for p in _glob(folder, "*.png")]


# --------------------------------------------------------------------------- the registry
DATASETS: dict[str, Dataset] = {
    "sample": Dataset(
        name="sample",
        description="one fundus photograph shipped with scikit-image (skimage.data.retina, 1411x1411)",
        url=None,
        homepage="https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg",
        licence="CC0 1.0 (public domain dedication)",
        citation=(
            "Häggström M., Medical gallery of Mikael Häggström 2014, WikiJournal of Medicine 1(2), 2014, "
            "doi:10.15347/wjm/2014.008"
        ),
        parse=_parse_pngs,
        skimage=("retina",),
    ),
    "sample_histology": Dataset(
        name="sample_histology",
        description=(
            "one immunohistochemistry (IHC, DAB + hematoxylin) micrograph of colonic glands shipped with "
            "scikit-image (skimage.data.immunohistochemistry, 512x512)"
        ),
        url=None,
        homepage="https://scikit-image.org/docs/stable/api/skimage.data.html#skimage.data.immunohistochemistry",
        licence="no known copyright restrictions (per scikit-image)",
        citation="Center for Microscopy And Molecular Imaging (CMMI), via scikit-image's skimage.data",
        parse=_parse_pngs,
        skimage=("immunohistochemistry",),
        modality="histology",
    ),
    "chase_db1": Dataset(
        name="chase_db1",
        description="CHASE_DB1: 28 paediatric fundus photographs (999x960) with two observers' vessel masks",
        url="https://researchdata.kingston.ac.uk/96/1/CHASEDB1.zip",
        homepage="https://researchdata.kingston.ac.uk/96/",
        licence="CC BY 4.0",
        citation=(
            "Fraz M.M. et al., An ensemble classification-based approach applied to retinal blood vessel "
            "segmentation, IEEE Trans. Biomed. Eng. 59(9), 2012"
        ),
        parse=_parse_chase,
        checksums_file="chase_db1.sha256",  # all 28 images (01L-14R) and both observers' masks
        # the split of CHASE_DB1's vessel-segmentation papers: 01L-10R train, 11L-14R (4 children) test
        test_subjects=tuple(f"chase_db1/{n}" for n in ("11", "12", "13", "14")),
        archive_sha256=None,
        files=("Image_*.jpg", "Image_*_1stHO.png", "Image_*_2ndHO.png"),
    ),
    "drive": Dataset(
        name="drive",
        description=(
            "DRIVE: 40 adult fundus photographs (565x584 TIFF, 20 training + 20 test) from a Dutch diabetic "
            "retinopathy screening programme, with manual vessel masks (GIF; a second observer's for the test "
            "set) and FOV masks"
        ),
        url=None,  # the download needs a grand-challenge.org account: put DRIVE.zip's contents in the mirror
        homepage="https://drive.grand-challenge.org/",
        licence="research use under the DRIVE terms (registration at grand-challenge.org); no open licence",
        citation=(
            "Staal J., Abramoff M.D., Niemeijer M., Viergever M.A., van Ginneken B., Ridge-based vessel "
            "segmentation in color images of the retina, IEEE Trans. Med. Imaging 23(4):501-509, 2004, "
            "doi:10.1109/TMI.2004.825627"
        ),
        parse=_parse_drive,
        checksums_file=None,  # not known: refused unless allow_unverified
        archive_sha256=None,
        files=(
            "training/images/*_training.tif",
            "training/1st_manual/*_manual1.gif",
            "training/mask/*_training_mask.gif",
            "test/images/*_test.tif",
            "test/1st_manual/*_manual1.gif",
            "test/2nd_manual/*_manual2.gif",
            "test/mask/*_test_mask.gif",
        ),
    ),
    "stare": Dataset(
        name="stare",
        description=(
            "STARE: 20 fundus photographs (700x605 PPM) with two observers' vessel labels (A. Hoover 'ah', "
            "V. Kouznetsova 'vk'); no FOV masks"
        ),
        url="https://cecas.clemson.edu/~ahoover/stare/probing/stare-images.tar",
        homepage="https://cecas.clemson.edu/~ahoover/stare/",
        licence="free for research use with citation (per the STARE project page); no formal licence",
        citation=(
            "Hoover A., Kouznetsova V., Goldbaum M., Locating blood vessels in retinal images by piecewise "
            "threshold probing of a matched filter response, IEEE Trans. Med. Imaging 19(3):203-210, 2000, "
            "doi:10.1109/42.845178"
        ),
        parse=_parse_stare,
        checksums_file=None,  # not known: refused unless allow_unverified
        archive_sha256=None,
        extra_archives=(
            Archive("https://cecas.clemson.edu/~ahoover/stare/probing/labels-ah.tar"),
            Archive("https://cecas.clemson.edu/~ahoover/stare/probing/labels-vk.tar"),
        ),
        files=("im[0-9][0-9][0-9][0-9].ppm.gz", "im[0-9][0-9][0-9][0-9].*.ppm.gz",
               "im[0-9][0-9][0-9][0-9].ppm", "im[0-9][0-9][0-9][0-9].*.ppm"),
    ),
    "hrf": Dataset(
        name="hrf",
        description=(
            "HRF (High-Resolution Fundus): 45 fundus photographs (3504x2336 JPEG; 15 healthy, 15 glaucoma, "
            "15 diabetic retinopathy) with manual vessel masks and FOV masks (TIFF)"
        ),
        url="https://www5.cs.fau.de/fileadmin/research/datasets/fundus-images/all.zip",
        homepage="https://www5.cs.fau.de/research/data/fundus-images/",
        licence="free for research use with citation (per the dataset page)",
        citation=(
            "Budai A., Bock R., Maier A., Hornegger J., Michelson G., Robust vessel segmentation in fundus "
            "images, International Journal of Biomedical Imaging 2013:154860, 2013, doi:10.1155/2013/154860"
        ),
        parse=_parse_hrf,
        checksums_file=None,  # not known: refused unless allow_unverified
        archive_sha256=None,
        files=("images/*.jpg", "manual1/*.tif", "mask/*_mask.tif"),
    ),
}

# --------------------------------------------------------------------------- gathering
def gather_sample(out_dir: Path, name: str = "sample") -> list[SourceImage]:
    """Write a built-in sample's images (``DATASETS[name].skimage``) as PNGs under ``out_dir/name``."""
    import skimage.data

    ds = DATASETS[name]
    folder = Path(out_dir) / name
    for fn in ds.skimage:
        write_png_atomic(folder / f"{fn}.png", getattr(skimage.data, fn)())
    wanted = {f"{fn}.png" for fn in ds.skimage}
    return [r for r in ds.parse(folder) if r.image.name in wanted]


def _archive_name(url: str, fallback: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return name if re.fullmatch(r"[A-Za-z0-9._-]+", name or "") else fallback


def _find_root(folder: Path, ds: Dataset, known: dict[str, str] | None) -> Path | None:
    """The folder at most ``MAX_ROOT_DEPTH`` levels below ``folder`` holding most of the dataset's files."""
    scores: dict[tuple[str, ...], int] = {}
    for rel in _walk(folder):
        parts = tuple(rel.split("/"))
        for depth in range(min(len(parts) - 1, MAX_ROOT_DEPTH) + 1):
            if ds.expects("/".join(parts[depth:]), known):
                scores[parts[:depth]] = scores.get(parts[:depth], 0) + 1
    if not scores:
        return None
    best = min(scores, key=lambda r: (-scores[r], len(r), r))
    return folder.joinpath(*best)


def _fetch_roots(ds: Dataset, cache_dir: Path, known: dict[str, str] | None) -> list[Path]:
    roots = []
    for i, arch in enumerate(ds.archives()):
        fname = _archive_name(arch.url, f"{ds.name}-{i}.archive")
        archive = download(arch.url, Path(cache_dir) / ds.name / fname, arch.sha256)
        extracted = Path(cache_dir) / ds.name / f"{fname}-extracted"
        extract_archive(archive, extracted)
        root = _find_root(extracted, ds, known)
        if root is None:
            raise InputError(
                f"{archive} (from {arch.url}): holds none of the files expected for '{ds.name}' "
                f"({', '.join(ds.files) or 'its checksum list'}). Fix: delete it and run again; if it persists the "
                f"archive's layout changed, so check {ds.homepage or 'the dataset page'} and update the registry entry."
            )
        roots.append(root)
    return roots


def _copy_hashing(src: Path, dest: Path) -> str:
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while block := fin.read(1 << 20):
            h.update(block)
            fout.write(block)
    return h.hexdigest()


def gather_registered(
    name: str,
    out_dir: Path,
    mirror: Path,
    cache_dir: Path,
    *,
    allow_network: bool = True,
    allow_unverified: bool = False,
    allow_partial: bool = False,
) -> list[SourceImage]:
    """Copy a registered dataset into ``out_dir/name``, checking every file against its checksum.

    Looks in ``mirror/name`` first; downloads and extracts the public archive(s) otherwise. See
    :class:`Dataset` for the verification policy and ``allow_unverified``. A dataset with pinned
    checksums is complete (every pinned file present) or refused with the missing files named,
    unless ``allow_partial`` (``download.allow_partial`` in params.yaml): then the files present are
    used, with an :class:`IncompleteDatasetWarning`.
    """
    ds = DATASETS[name]
    if ds.skimage:
        return gather_sample(out_dir, name)
    known = ds.checksums()
    roots = _source_roots(name, ds, Path(mirror) / name, cache_dir, known, allow_network)
    files = _expected_files(ds, roots, known)
    dest = Path(out_dir) / name
    used, unverified = _copy_verified(name, files, known, dest, allow_unverified)
    # stacklevel 3: the warnings point at gather_registered's caller, as when they were raised here
    _check_complete(name, ds, known, files, roots[0], allow_partial)
    _check_verified(name, known, used, unverified, roots[0], dest, allow_unverified)
    records = ds.parse(dest)
    if not records:
        raise InputError(f"{roots[0]}: no images of dataset '{name}' found. Fix: check the mirror folder's layout.")
    return records


def _source_roots(name: str, ds: Dataset, src: Path, cache_dir: Path, known: dict[str, str] | None,
                  allow_network: bool) -> list[Path]:
    """The dataset's root folders: the one in the mirror folder ``src``, else those of its downloaded archives."""
    if src.is_dir():
        root = _find_root(src, ds, known)
        if root is None:
            raise InputError(
                f"{src}: holds none of the files expected for dataset '{name}' ({', '.join(ds.files)}). "
                f"Fix: unpack the dataset from {ds.homepage or ds.url} into that folder, keeping its layout."
            )
        return [root]
    if not allow_network:
        raise InputError(
            f"{src}: dataset '{name}' is not in the mirror folder and downloading is off. "
            f"Fix: put its files there (from {ds.homepage or ds.url}), or set download.allow_network: true."
        )
    if not ds.archives():
        raise InputError(
            f"{src}: dataset '{name}' is not in the mirror folder and has no direct download. Fix: get it from "
            f"{ds.homepage} (registration may be needed) and unpack it into {src}, keeping its layout."
        )
    return _fetch_roots(ds, cache_dir, known)


def _expected_files(ds: Dataset, roots: list[Path], known: dict[str, str] | None) -> dict[str, Path]:
    """``{relative path: file}`` of the dataset's files under ``roots`` (the first root's copy wins)."""
    files: dict[str, Path] = {}
    for root in roots:
        for rel in _walk(root):
            if ds.expects(rel, known):
                files.setdefault(rel, root / rel)
    return files


def _copy_verified(name: str, files: dict[str, Path], known: dict[str, str] | None, dest: Path,
                   allow_unverified: bool) -> tuple[dict[str, str], list[str]]:
    """Copy ``files`` under ``dest``, hashing each: ``({relative path: digest} of those copied, the
    unverified ones)``. Unverified files are copied only with ``allow_unverified``; a mismatch with
    a pinned checksum removes the copy and raises."""
    used: dict[str, str] = {}
    unverified: list[str] = []
    for rel, path in sorted(files.items()):
        expected = None if known is None else known.get(rel)
        if expected is None and not allow_unverified:
            unverified.append(rel)
            continue
        got = _copy_hashing(path, dest / rel)
        if expected is not None and got != expected:
            (dest / rel).unlink()
            raise InputError(
                f"{path}: checksum mismatch for dataset '{name}' (expected {expected}, got {got}). "
                "Fix: replace the file with the dataset's original copy."
            )
        if expected is None:
            unverified.append(rel)
        used[rel] = got
    return used, unverified


def _check_complete(name: str, ds: Dataset, known: dict[str, str] | None, files: dict[str, Path], root: Path,
                    allow_partial: bool) -> None:
    """Refuse a dataset missing pinned files (warn instead with ``allow_partial``)."""
    missing = sorted(set(known or {}) - set(files))
    if not missing:
        return
    shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    where = (f"{root}: dataset '{name}' is incomplete: {len(missing)} of its {len(known)} pinned files are missing "
             f"({shown})")
    if not allow_partial:
        raise InputError(
            f"{where}. Fix: put them back from the dataset's original copy ({ds.homepage or ds.url}; with a mirror "
            f"folder, copy them into {root}), or set download.allow_partial: true in params.yaml to run on the files "
            "present."
        )
    warnings.warn(f"{where}; used without them (download.allow_partial).", IncompleteDatasetWarning, stacklevel=3)


def _check_verified(name: str, known: dict[str, str] | None, used: dict[str, str], unverified: list[str], root: Path,
                    dest: Path, allow_unverified: bool) -> None:
    """Refuse a dataset of which nothing was copied; warn about unverified files left out or used
    (and record the digests of those used in ``dest/SHA256SUMS``)."""
    pin = f"{CHECKSUMS_PACKAGE}/{name}.sha256"
    if not used:
        if unverified:
            why = "has no pinned checksums" if known is None else "has no pinned checksum for any of them"
            raise InputError(
                f"{root}: dataset '{name}' {why}, so its {len(unverified)} files cannot be verified. Fix: set "
                f"download.allow_unverified: true in params.yaml to use them unverified (their digests are then "
                f"recorded in {dest}/SHA256SUMS), or pin them: check the files, write their digests to {pin} and "
                f"set checksums_file in the '{name}' entry of DATASETS."
            )
        raise InputError(f"{root}: none of the files expected for '{name}' found. Fix: check the folder's layout.")
    if unverified and not allow_unverified:
        warnings.warn(
            f"{root}: left out {len(unverified)} files of '{name}' with no pinned checksum "
            f"({', '.join(unverified[:3])}{', ...' if len(unverified) > 3 else ''}). Fix: add them to {pin}, or set "
            "download.allow_unverified: true to use them unverified.",
            UnverifiedFilesWarning,
            stacklevel=3,
        )
    elif unverified:
        lines = "".join(f"{digest}  {rel}\n" for rel, digest in sorted(used.items()))
        (dest / "SHA256SUMS").write_text(lines)
        warnings.warn(
            f"{root}: using {len(unverified)} files of '{name}' unverified (allow_unverified); their digests "
            f"are recorded in {dest}/SHA256SUMS. Fix: check them and copy that file to {pin} to pin them.",
            UnverifiedFilesWarning,
            stacklevel=3,
        )


def gather_folder(folder: Path, out_dir: Path) -> list[SourceImage]:
    """The user's own images: every readable image under ``folder``, converted to RGB PNG."""
    folder = Path(folder)
    paths = list_images(folder)
    others = sorted(
        p for p in folder.rglob("*") if p.is_file() and p not in set(paths) and not p.name.startswith(".")
    )
    if others:
        raise InputError(
            f"{others[0]}: not an image (expected .png, .jpg, .jpeg, .tif, .tiff or .bmp). "
            "Fix: remove it from the folder or convert it."
        )
    records = []
    for path in paths:
        image = read_image(path, "RGB")
        rel = path.relative_to(folder).with_suffix("").as_posix().replace("/", "__")
        dest = Path(out_dir) / "folder" / f"{rel}.png"
        write_png_atomic(dest, image)
        records.append(SourceImage(id=f"folder/{rel}", dataset="folder", image=dest))
    if not records:
        raise InputError(f"{folder}: no images found. Fix: copy images there and run `dvc add data`.")
    return records


def gather(
    names: list[str],
    out_dir: Path,
    *,
    mirror: Path,
    folder: Path,
    cache_dir: Path,
    allow_network: bool,
    allow_unverified: bool = False,
    allow_partial: bool = False,
) -> list[SourceImage]:
    """Gather the named sources: ``folder`` or any key of ``DATASETS``."""
    records: list[SourceImage] = []
    for name in names:
        if name == "folder":
            records += gather_folder(folder, out_dir)
        elif name in DATASETS:
            records += gather_registered(
                name, out_dir, mirror, cache_dir, allow_network=allow_network, allow_unverified=allow_unverified,
                allow_partial=allow_partial,
            )
        else:
            known = ", ".join(["folder", *DATASETS])
            raise InputError(f"params.yaml: unknown source '{name}' in download.sources. Fix: use one of {known}.")
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise InputError("download.sources: the same source is listed twice. Fix: list each source once.")
    return records


def load_mask(path: Path | None) -> np.ndarray | None:
    return None if path is None else read_mask(path)
