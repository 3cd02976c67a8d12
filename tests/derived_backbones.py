"""Backbones derived from a pretrained one, as honest baselines for backbone selection: the same
model with its top layers removed, and the same architecture randomly initialised. One definition,
in bench/fixtures.py (bench never imports tests; tests may use bench's helpers)."""

from bench.fixtures import random_copy, truncated_copy

__all__ = ["random_copy", "truncated_copy"]
