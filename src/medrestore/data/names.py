"""File names of images: the one mapping from an image id to the name its PNGs are stored under.

Kept apart from :mod:`medrestore.data.prepare` so that the readers of the stored images (patchify,
corrupt, evaluate, the report) do not import, nor depend in dvc.yaml on, the download code.
"""

from __future__ import annotations


def safe_name(image_id: str) -> str:
    """File-name form of an image id (``chase_db1/Image_01L`` -> ``chase_db1__Image_01L``)."""
    return image_id.replace("/", "__").replace("#", "--")
