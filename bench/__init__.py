"""Benchmarks: `make bench` runs them against a server it starts (loopback only)."""
