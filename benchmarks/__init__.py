"""Load benchmarks for imcluster; see benchmarks/README.md."""
