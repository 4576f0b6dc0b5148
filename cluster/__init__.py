"""Veil as a cluster on this one machine (loopback): PostgreSQL, three OpenBao nodes, API
processes and job workers, each its own process, as ``docs/deployment.md`` spreads them over
machines.  ``make cluster-demo`` runs the demo's story across them; ``bench/scaling_bench.py``
measures job throughput with more workers."""
