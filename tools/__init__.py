"""Maintainer tools, not installed with posheads: the peers the tests and benchmarks
compare against, the extraction of the shipped data sets, the structure report."""
