"""Reading an upload in memory: its text encoding, its values converted and checked against the
dataset's declaration, and column-class suggestions."""
