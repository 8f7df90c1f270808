"""Benchmarks of seglib: run them from the repository root as ``python benchmarks/<script>.py`` (or
``python -m benchmarks.<script>``)."""
