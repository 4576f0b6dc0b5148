"""Veil's REST API under /v1 (FastAPI).  ``sandbox.server`` assembles it with the console
into the application; its OpenAPI document is at /openapi.json."""
