"""Benchmarks on exported embeddings: zero-shot 9-DoF pose by box fitting, re-identification,
category accuracy, retrieval."""
