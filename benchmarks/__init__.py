"""Benchmarks of the course against the book's code: bench.py (speed ratios of the helpers)
and full_scale.py (every notebook on full-size files); see README.md."""
