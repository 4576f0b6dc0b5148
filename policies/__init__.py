"""Veil's policies: principals and roles, consent grants, tiers, decisions, budgets, audit.

Depends on ``keys`` (for signing) and on nothing else of Veil.
"""
