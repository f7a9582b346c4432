"""Field-of-view (FOV) detection and the crop/resize modes of the papers.

Fundus photographs show the retina as a bright disc on a black surround. CHASE_DB1 ships no FOV
masks, so the FOV is found from the image itself: the red channel (the brightest channel inside
the retina, near zero outside) is thresholded at a fraction of its robust maximum, holes are
filled, small specks are removed and the largest connected component is kept.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage as ndi


def detect_fov(image: np.ndarray, rel_threshold: float = 0.1) -> np.ndarray:
    """Boolean FOV mask of an RGB (or grey) uint8 fundus image.

    ``rel_threshold`` is a fraction of the 99th-percentile intensity of the red channel. Images
    without a dark surround (histology, X-ray) get a mask that is all True.
    """
    channel = image[..., 0] if image.ndim == 3 else image
    channel = channel.astype(np.float32)
    ref = float(np.percentile(channel, 99))
    if ref <= 0:
        return np.zeros(channel.shape, dtype=bool)
    mask = ndi.median_filter(channel, size=5) > rel_threshold * ref
    mask = ndi.binary_opening(mask, structure=np.ones((5, 5), dtype=bool))
    labels, count = ndi.label(mask)
    if count == 0:
        return np.ones(channel.shape, dtype=bool)
    sizes = ndi.sum(mask, labels, index=np.arange(1, count + 1))
    mask = labels == (int(np.argmax(sizes)) + 1)
    return ndi.binary_fill_holes(mask)


def fov_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the mask, half-open."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0, mask.shape[0], 0, mask.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def centre_square(shape: tuple[int, int]) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return top, top + side, left, left + side


def crop(arr: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    t, b, l, r = box
    return arr[t:b, l:r]


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 image to size x size (Lanczos; deterministic)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image.copy()
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a boolean mask by area averaging then a 0.5 threshold."""
    if mask.shape[0] == size and mask.shape[1] == size:
        return mask.copy()
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX)) >= 128


MODES = ("border_centre", "border", "centre", "centre_crop", "resize")


def prepare_arrays(
    image: np.ndarray,
    vessels: np.ndarray | None,
    *,
    size: int,
    mode: str = "border_centre",
    fov_threshold: float = 0.1,
    fov: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Crop and resize one source image with its FOV and (optional) vessel mask.

    ``fov`` is the dataset's own FOV mask (DRIVE, HRF); without one the FOV is detected from the
    image (:func:`detect_fov`). Modes, each with the paper it comes from:

      ``border_centre``  crop the black border (FOV bounding box), then the centre square, then
                         resize to ``size`` (the default: square, nothing squashed).
      ``border``         crop the black border, then resize the box to ``size`` x ``size``
                         (Krenz2018: "crop black borders, rescale to 1024x1024").
      ``centre``         centre square of the whole frame, then resize.
      ``centre_crop``    centre ``size`` x ``size`` crop at the native resolution, no resizing
                         (Hayee2017: 1696x1696 centre crops); the image must be at least that big.
      ``resize``         resize the whole frame to ``size`` x ``size`` (Gondara2016: 64x64).
    """
    if mode not in MODES:
        raise ValueError(f"prepare.mode must be one of {', '.join(MODES)}, not {mode!r}")
    if fov is None:
        fov = detect_fov(image, fov_threshold)
    elif fov.shape != image.shape[:2]:
        raise ValueError(f"the FOV mask is {fov.shape[1]}x{fov.shape[0]}, the image {image.shape[1]}x{image.shape[0]}")
    if mode in ("border_centre", "border"):
        box = fov_bbox(fov)
        image, fov = crop(image, box), crop(fov, box)
        vessels = crop(vessels, box) if vessels is not None else None
    if mode in ("border_centre", "centre"):
        box = centre_square(image.shape)
    elif mode == "centre_crop":
        h, w = image.shape[:2]
        if min(h, w) < size:
            raise ValueError(f"the image is {w}x{h}, smaller than the {size}x{size} centre crop")
        top, left = (h - size) // 2, (w - size) // 2
        box = (top, top + size, left, left + size)
    else:
        box = (0, image.shape[0], 0, image.shape[1])
    image, fov = crop(image, box), crop(fov, box)
    vessels = crop(vessels, box) if vessels is not None else None
    image = resize_image(image, size)
    fov = resize_mask(fov, size)
    if vessels is not None:
        vessels = resize_mask(vessels, size)
    return image, fov, vessels


def to_grey_rgb(image: np.ndarray) -> np.ndarray:
    """Grey levels (ITU-R BT.601 luma, PIL's ``L``) stored as three equal channels."""
    grey = np.asarray(Image.fromarray(image).convert("L"))
    return np.repeat(grey[..., None], 3, axis=2)
