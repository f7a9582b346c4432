"""Runs of the whole pipeline: the vessel-term weight sweep over DVC experiments (:mod:`.sweep`) and
``medrestore verify``, a rerun checked against the published numbers (:mod:`.verify`)."""
