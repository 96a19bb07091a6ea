"""Datasets: the registry of files, fetch/check, and loaders for benchmarks and benign fine-tuning sets."""
