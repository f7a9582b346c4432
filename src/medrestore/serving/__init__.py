"""A trained model applied to images: tiled restoration (:mod:`.inference`) with its batch-norm folding
(:mod:`.bn_folding`), ``medrestore restore`` on one's own files (:mod:`.restore`), the colour-range
check (:mod:`.colour`), and the model as an MLflow pyfunc (:mod:`.mlflow_model`, :mod:`.mlflow_pyfunc`)."""
