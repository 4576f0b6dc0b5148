"""The control plane's side of enterprise nodes (``docs/nodes.md``).

An enterprise whose data lives on its own node has no key and no data byte here: the
control plane keeps the node's public keys (``registry``), the catalog entries and grants
the node publishes, signed (``mirror``), and hands the node the jobs on its datasets,
taking back only the releases the node signed (``feed``).  The node's own code is the
top-level package ``node``.
"""
