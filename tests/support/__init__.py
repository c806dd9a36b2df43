"""Helpers shared by the tests and the benchmarks: real daemons, a local hub, test models."""
