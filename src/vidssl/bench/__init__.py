"""Benchmarks behind `make bench-*`: each prints its numbers and writes them to build/bench/."""
