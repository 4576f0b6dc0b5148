"""Where Veil's configuration comes from: the one settings object (``VEIL_*``) and the data
directory, private to the user Veil runs as."""
