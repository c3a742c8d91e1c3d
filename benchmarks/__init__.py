"""Benchmarks (``make bench``): measured on the local devnet, never part of the test suite."""
