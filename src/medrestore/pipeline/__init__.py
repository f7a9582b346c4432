"""The pipeline layer: one module per DVC stage (``download``, ``prepare``, ``patchify``, ``corrupt``,
``train``, ``train_segmenter``, ``evaluate``, ``report``), each with a ``main(argv)`` that reads the
stage's params, calls the libraries (``data``, ``degradations``, ``models``, ``training``,
``vessels``, ``metrics``, ``evaluation``, ``report``) and writes the stage's outputs atomically.
``stages/*.py`` only call these. The outputs' paths are in :mod:`medrestore.pipeline.paths`, once."""
