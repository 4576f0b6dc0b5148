"""Setting a node up and running it: ``provision`` (``veil node init --enrol``, its
settings, the running core and link) and ``demo`` (the control plane and one node per
enterprise, as ``veil demo`` runs them)."""
