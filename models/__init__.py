"""Pyro models built on posheads' softplus distributions and heads (``posheads.models``)."""

__all__: list[str] = []
