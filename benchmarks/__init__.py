"""Benchmark scripts (not installed): `python -m benchmarks.<name>` prints numbers side by side."""
