"""Veil's sandbox: tenants and their sandboxes, the API, the CLI, and the wiring of it all.

This is the top layer: it may use ``policies``, ``analytics`` and ``keys``;
none of them uses it.
"""
