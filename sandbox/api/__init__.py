"""Veil's REST API under /v1 (FastAPI); OpenAPI at /openapi.json (``sandbox.api.app``)."""
