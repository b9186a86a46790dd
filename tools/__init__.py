"""Maintainer tools: not installed with posheads (peers for tests and benchmarks, data extraction, structure reports)."""
