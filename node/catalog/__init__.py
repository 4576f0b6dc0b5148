"""What a node publishes: its datasets' declarations and public row counts, its signed
grants, and the provider directory it takes back (``publish``).  Never data."""
