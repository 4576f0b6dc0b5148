"""Veil's REST API under /v1 (FastAPI); OpenAPI at /openapi.json."""

from sandbox.api.app import app_from_environment, create_app

__all__ = ["app_from_environment", "create_app"]
