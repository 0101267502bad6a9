"""Benchmarks: `python -m benchmarks [--smoke] [--out DIR]` (see benchmarks/run.py)."""
