"""Principals and what they hold: enterprises (with their keys), providers and officers, their
API tokens, and an enterprise's key rotation."""
