"""Registry of source datasets and the download stage's gathering of them into one manifest.

Registering a dataset is one :class:`Dataset` entry in ``DATASETS``. Each source image keeps an
id (``dataset/name``), its dataset, and its vessel masks when the dataset has them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from medrestore.data.fetch import download, extract_archive
from medrestore.io import InputError, list_images, read_image, sha256_file, write_png_atomic


@dataclass(frozen=True)
class SourceImage:
    id: str
    dataset: str
    image: Path
    vessels: Path | None = None
    vessels_2nd: Path | None = None

    def as_dict(self, root: Path) -> dict:
        rel = lambda p: p.relative_to(root).as_posix() if p is not None else None  # noqa: E731
        return {
            "id": self.id,
            "dataset": self.dataset,
            "image": rel(self.image),
            "vessels": rel(self.vessels),
            "vessels_2nd": rel(self.vessels_2nd),
            "sha256": sha256_file(self.image),
        }


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    url: str | None
    licence: str
    citation: str
    parse: Callable[[Path], list[SourceImage]] = field(repr=False)
    checksums_file: str | None = None

    def checksums(self) -> dict[str, str]:
        if self.checksums_file is None:
            return {}
        text = resources.files("medrestore.data").joinpath("checksums", self.checksums_file).read_text()
        pairs = (line.split() for line in text.splitlines() if line.strip())
        return {name: digest for digest, name in pairs}


def _parse_chase(folder: Path) -> list[SourceImage]:
    out = []
    for img in sorted(folder.glob("Image_*.jpg")):
        stem = img.stem
        first, second = folder / f"{stem}_1stHO.png", folder / f"{stem}_2ndHO.png"
        out.append(
            SourceImage(
                id=f"chase_db1/{stem}",
                dataset="chase_db1",
                image=img,
                vessels=first if first.exists() else None,
                vessels_2nd=second if second.exists() else None,
            )
        )
    return out


DATASETS: dict[str, Dataset] = {
    "chase_db1": Dataset(
        name="chase_db1",
        description="CHASE_DB1: 28 paediatric fundus photographs (999x960) with two observers' vessel masks",
        url="https://researchdata.kingston.ac.uk/96/1/CHASEDB1.zip",
        licence="CC BY 4.0",
        citation=(
            "Fraz M.M. et al., An ensemble classification-based approach applied to retinal blood vessel "
            "segmentation, IEEE Trans. Biomed. Eng. 59(9), 2012"
        ),
        parse=_parse_chase,
        checksums_file="chase_db1.sha256",
    ),
}

SAMPLE_IMAGES = {
    # scikit-image ships these inside its wheel: available offline everywhere.
    "retina": "fundus photograph (skimage.data.retina, CC0, from Wikimedia Commons)",
}


def gather_sample(out_dir: Path) -> list[SourceImage]:
    import skimage.data

    records = []
    for name in SAMPLE_IMAGES:
        image = getattr(skimage.data, name)()
        path = out_dir / "sample" / f"{name}.png"
        write_png_atomic(path, image)
        records.append(SourceImage(id=f"sample/{name}", dataset="sample", image=path))
    return records


def gather_registered(
    name: str, out_dir: Path, mirror: Path, cache_dir: Path, *, allow_network: bool = True
) -> list[SourceImage]:
    """Copy a registered dataset into ``out_dir/name``, verifying every file against its checksum.

    Looks in ``mirror/name`` first; downloads and extracts the public archive otherwise.
    """
    ds = DATASETS[name]
    known = ds.checksums()
    src = Path(mirror) / name
    if not src.is_dir():
        if not allow_network or ds.url is None:
            raise InputError(
                f"{src}: dataset '{name}' is not in the mirror folder and downloading is off. "
                f"Fix: put its files there, or set download.allow_network: true."
            )
        archive = download(ds.url, Path(cache_dir) / Path(ds.url).name, None)
        extracted = Path(cache_dir) / f"{name}-extracted"
        extract_archive(archive, extracted)
        candidates = {p.parent for p in extracted.rglob("*") if p.name in known}
        if not candidates:
            raise InputError(f"{archive}: holds none of the files expected for '{name}'. Fix: delete it and retry.")
        src = sorted(candidates)[0]
    dest = Path(out_dir) / name
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in src.iterdir() if p.is_file() and p.name in known):
        got = sha256_file(path)
        if got != known[path.name]:
            raise InputError(
                f"{path}: checksum mismatch for dataset '{name}' (expected {known[path.name]}, got {got}). "
                "Fix: replace the file with the dataset's original copy."
            )
        shutil.copyfile(path, dest / path.name)
    records = ds.parse(dest)
    if not records:
        raise InputError(f"{src}: no images of dataset '{name}' found. Fix: check the mirror folder's layout.")
    return records


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
    names: list[str], out_dir: Path, *, mirror: Path, folder: Path, cache_dir: Path, allow_network: bool
) -> list[SourceImage]:
    records: list[SourceImage] = []
    for name in names:
        if name == "sample":
            records += gather_sample(out_dir)
        elif name == "folder":
            records += gather_folder(folder, out_dir)
        elif name in DATASETS:
            records += gather_registered(name, out_dir, mirror, cache_dir, allow_network=allow_network)
        else:
            known = ", ".join(["sample", "folder", *DATASETS])
            raise InputError(f"params.yaml: unknown source '{name}' in download.sources. Fix: use one of {known}.")
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise InputError("download.sources: the same source is listed twice. Fix: list each source once.")
    return records


def load_mask(path: Path | None) -> np.ndarray | None:
    return None if path is None else read_image(path, "L") > 127
