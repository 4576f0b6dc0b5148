"""Veil's REST API under /v1 (FastAPI); OpenAPI at /openapi.json."""

from sandbox.api.app import create_app

__all__ = ["create_app"]
