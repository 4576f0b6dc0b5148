"""An enterprise node (``veil node``): the enterprise's data, keys, sandbox, output checks,
grants, budget ledger and audit chain, on the enterprise's own machine.

A node is a complete Veil core (``sandbox.runtime.veil``) of its own: its own database, its own
OpenBao with credentials that exist only here, its own job worker.  What makes it a node
is the link (``node.link.rounds``): it connects outbound only to the control plane, publishes
its catalog and grants (signed), pulls the jobs on its datasets, decides each again
against its own grants and ledger (``node.work.jobs``), and sends back only signed releases.
The control plane's side is ``sandbox.nodes``; the protocol is ``docs/nodes.md``.
"""
