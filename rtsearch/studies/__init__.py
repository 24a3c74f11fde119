"""The studies and benchmarks that write results/; may import every layer below the entry points."""
