"""Reproducible benchmarks of the project (run each as ``python -m benchmarks.<name>``; see benchmarks/README.md)."""
