"""Providers' scorecards per evaluation period, and the exit of a provider that keeps failing."""
