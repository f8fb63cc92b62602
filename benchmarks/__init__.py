"""Throughput and memory benchmarks; `python -m benchmarks.run` runs them all (see docs/performance.md)."""
