"""The city programme's tables for the bureau (工信局): aggregates across enterprises, each
cell counting at least five of them and perturbed by the cell-key method
(``sandbox.programme.protection``; docs/programme.md)."""
