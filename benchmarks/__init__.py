"""Scripts that print throughput figures (not timed tests); see README.md, "Performance".

Run from the repository root: ``python -m benchmarks.<name> --help`` (or ``PYTHONPATH=. python benchmarks/<name>.py``).
"""
