"""The node's outbound link to the control plane (``rounds``): publish, claim, hand over,
answer, repeat.  It composes ``catalog`` and ``work`` over ``protocol``."""
