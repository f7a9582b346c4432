"""Where results come from: MLflow runs tagged with DVC lineage (:mod:`.runs`), the one reader of
``dvc.lock`` (:mod:`.dvclock`), and the lineage of a file (:mod:`.lineage`)."""
