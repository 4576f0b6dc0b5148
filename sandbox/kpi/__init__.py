"""KPI contracts between an enterprise and a provider, and their signed DP verdicts."""
