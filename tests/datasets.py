"""Small synthetic datasets for tests: an easy sentiment task a tiny model learns in a few epochs.
One definition, in bench/fixtures.py (bench never imports tests; tests may use bench's helpers)."""

from bench.fixtures import easy_sentiment

__all__ = ["easy_sentiment"]
