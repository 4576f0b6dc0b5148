"""Collaborations across enterprises, on the control plane: a provider's proposal
(``proposals``), each enterprise's signed opt-in from its node (``proposals.set_membership``)
and the runs (``runs``): rounds of secure aggregation whose messages the control plane
relays and whose noised sum is all it reads (``docs/collaborations.md``)."""
