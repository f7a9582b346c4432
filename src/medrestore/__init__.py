"""medrestore: reproducible restoration of medical images (retinal fundus first).

The package root holds only this face and the command (``medrestore.cli``); every other module lives
in a folder, one concern each:

- ``medrestore.core``         atomic writers, image reading with clear errors, params.yaml's schema
- ``medrestore.data``         sources (download), field-of-view and crop/resize, patches and splits
- ``medrestore.degradations`` seeded, replayable corruptions
- ``medrestore.models``       every network and classical baseline, registered by name in ``MODELS``
- ``medrestore.training``     the Lightning engine and the training losses
- ``medrestore.vessels``      vessel segmenters (Frangi, U-Net) and vessel scores
- ``medrestore.serving``      tiled restoration, ``medrestore restore``, the model as an MLflow pyfunc
- ``medrestore.evaluation``   the metric registry, per-image scores and statistics, gates, cost
- ``medrestore.tracking``     MLflow runs tagged with DVC lineage, ``dvc.lock``, the lineage of a file
- ``medrestore.report``       the comparison report, with the papers' claims and the quality targets
- ``medrestore.experiments``  the DVC-experiment sweep and ``medrestore verify``
- ``medrestore.pipeline``     one module per DVC stage, the paths table and the stages' code deps
"""

__version__ = "0.1.0"
