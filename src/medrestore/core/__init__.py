"""Plumbing every layer uses: atomic writers and image reading with clear errors (:mod:`.io`), and
params.yaml's schema (:mod:`.params`)."""
