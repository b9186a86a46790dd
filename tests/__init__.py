"""posheads test suite (mirrors the package layout)."""
