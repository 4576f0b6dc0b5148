"""Data sources a Veil core reads in place (issue 25): databases, OPC UA machines, MQTT.

An enterprise declares a source for one of its datasets; on a schedule (or continuously)
the source's new values are mapped onto the dataset's declared columns, validated exactly
as an upload is, and stored encrypted as the dataset's next version. ``base`` is what
every kind of source gives Veil.
"""
