"""What every request and job is handed: the ``Veil`` object (settings, database, key service,
clock, sandboxes), and the key server's wiring."""
