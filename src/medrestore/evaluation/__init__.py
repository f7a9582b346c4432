"""How methods are scored and compared: the metric registry (:mod:`.metrics`), the evaluate stage's
per-image scores and statistics (:mod:`.scoring`), the sanity gate (:mod:`.gates`), the external
evaluation on other cameras (:mod:`.external`) and the cost of a method (:mod:`.cost`)."""
