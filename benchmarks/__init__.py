"""Benchmarks of seglib: run them from the repository root as ``python -m benchmarks.<script>``."""
