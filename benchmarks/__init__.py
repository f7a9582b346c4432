"""Benchmarks of the pipeline, outside the library: ``python -m benchmarks.bench`` (``make bench``),
``benchmarks/learning.py``, ``benchmarks/patchify_bench.py``, ``benchmarks/dncnn_plain_loop.py``
(run from the repository root)."""
