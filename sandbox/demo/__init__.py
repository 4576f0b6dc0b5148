"""``veil demo``: the main path end to end on an embedded dataset, through the real API, and
``--keep``."""
