"""How a node talks to the control plane: the signed-request client (``client``) and the
node's signature on each document it sends (``signing``).  The bottom layer of ``node``."""
