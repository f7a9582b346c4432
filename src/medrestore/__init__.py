"""medrestore: reproducible restoration of medical images (retinal fundus first).

The package is organised one concern per module:

- ``medrestore.io``           atomic writers, image reading with clear errors, params loading
- ``medrestore.data``         sources (download), field-of-view and crop/resize, patches and splits
- ``medrestore.degradations`` seeded, replayable corruptions
- ``medrestore.models``       every network and classical baseline, registered by name in ``MODELS``
- ``medrestore.losses``       training losses
- ``medrestore.training``     the Lightning engine
- ``medrestore.inference``    tiled restoration of images of any size
- ``medrestore.metrics``      full-reference and no-reference quality metrics (pyiqa)
- ``medrestore.tracking``     MLflow runs tagged with DVC lineage
- ``medrestore.report``       HTML and Markdown comparison report
- ``medrestore.cli``          the ``medrestore`` command
"""

__version__ = "0.1.0"
