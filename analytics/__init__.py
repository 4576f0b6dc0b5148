"""Veil's analytics: what a job computes, releasing only safe outputs.

Works on data frames handed to it; knows nothing of HTTP, tenants, storage or
keys, and imports nothing else of Veil.
"""
