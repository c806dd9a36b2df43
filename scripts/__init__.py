"""Scripts: test-model fetcher and benchmarks (run as python -m scripts.NAME)."""
