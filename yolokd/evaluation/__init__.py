"""Measurement: COCO metrics for ``yolokd val``, run comparisons (``yolokd compare``) and seed studies."""
