"""Raises at import."""

raise RuntimeError("a tenant's bug at import")
