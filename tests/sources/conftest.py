"""Fixtures of the source kinds' tests: each kind's real server in its own module."""

from tests.sources.mqtt_broker import mqtt_broker, mqtt_broker_with_users, publisher

__all__ = ["mqtt_broker", "mqtt_broker_with_users", "publisher"]
