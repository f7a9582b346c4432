"""The MLflow pyfunc of a restoration model, logged as code ("models from code": no pickle is
written or read; the weights are safetensors). MLflow runs this file when it loads the model;
medrestore imports it nowhere. See :mod:`medrestore.serving.mlflow_model`.

It imports ``medrestore`` when it loads the model: the installed package when there is one, else the
copy of the source logged with the model (artifact ``medrestore_code``, put at the end of
``sys.path``, so that it never shadows an installed medrestore)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

ARTIFACT = "model_dir"  # medrestore.serving.mlflow_model.ARTIFACT
CODE_ARTIFACT = "medrestore_code"  # medrestore.serving.mlflow_model.CODE_ARTIFACT
TILE, OVERLAP = 512, 32  # medrestore.serving.mlflow_model.TILE, OVERLAP


def _find_medrestore(copy: str | None) -> None:
    """Make ``import medrestore`` work: the installed package if any, else the logged copy."""
    if importlib.util.find_spec("medrestore") is None:
        if copy is None:
            raise ImportError("medrestore is not installed and the model holds no copy of it. Fix: pip install "
                              "medrestore into this environment, or log the model again with "
                              "medrestore.serving.mlflow_model.")
        sys.path.append(copy)


class RestorationModel(PythonModel):
    """Restores H x W x 3 images: uint8 in, uint8 out (float input in [0, 1] gives float output);
    ``scale`` times larger for super-resolution. Tile and overlap (input pixels) as parameters."""

    def load_context(self, context) -> None:
        _find_medrestore(context.artifacts.get(CODE_ARTIFACT))
        from medrestore.models import load_model

        self.model, self.meta = load_model(Path(context.artifacts[ARTIFACT]))

    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        from medrestore.serving.inference import restore_array

        arr = np.asarray(model_input)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 image, got shape {arr.shape}")
        as_uint8 = arr.dtype == np.uint8
        img = arr.astype(np.float32) / 255.0 if as_uint8 else arr.astype(np.float32)
        p = params or {}
        out = restore_array(self.model, img, tile=int(p.get("tile", TILE)), overlap=int(p.get("overlap", OVERLAP)))
        return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8) if as_uint8 else out


mlflow.models.set_model(RestorationModel())
