"""A real MQTT broker for the tests: amqtt, in its own virtualenv, on a free loopback port.

amqtt's pins conflict with syft's, so it lives in ``.venv-mqtt-broker`` (``make
mqtt-broker``; ``VEIL_TEST_AMQTT`` names another ``amqtt`` executable) and runs as a
process the tests can kill (SIGKILL: a broker that dies, not one that says goodbye) and
start again on the same port. Without it the tests skip locally and fail under
``CI=true``. The broker's log is printed when a start fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from keys.bao import free_port
from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
AMQTT = Path(os.environ.get("VEIL_TEST_AMQTT", ROOT / ".venv-mqtt-broker" / "bin" / "amqtt"))
START_TIMEOUT_S = 60.0
AUTH = "amqtt.plugins.authentication"


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it is truthy (and return it), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Broker:
    """An amqtt broker process on ``127.0.0.1:port``; users from ``users`` when given."""

    def __init__(self, directory: Path, users: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.directory = directory
        self.log = directory / "amqtt.log"
        plugins: dict[str, Any]
        if users:
            passwords = directory / "passwords"
            passwords.write_text("".join(f"{u}:{_hash(p)}\n" for u, p in users.items()))
            plugins = {f"{AUTH}.FileAuthPlugin": {"password_file": str(passwords)}}
        else:
            plugins = {f"{AUTH}.AnonymousAuthPlugin": {"allow_anonymous": True}}
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": plugins,
        }
        self.config = directory / "amqtt.yaml"
        self.config.write_text(json.dumps(config))  # JSON is YAML
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(AMQTT), "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError("amqtt did not start:\n" + self.log.read_text()[-4000:])
            time.sleep(0.1)

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None


def _hash(password: str) -> str:
    """An argon2 hash of ``password``, made by the broker's own pwdlib."""
    code = (
        "import sys; from pwdlib import PasswordHash; from pwdlib.hashers.argon2 import "
        "Argon2Hasher; print(PasswordHash((Argon2Hasher(),)).hash(sys.stdin.read()))"
    )
    python = AMQTT.parent / "python"
    done = subprocess.run(
        [str(python), "-c", code], input=password, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _broker(directory: Path, users: dict[str, str] | None = None) -> Iterator[Broker]:
    require(AMQTT.exists(), f"the amqtt MQTT broker ({AMQTT}; make mqtt-broker installs it)")
    broker = Broker(directory, users)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh anonymous broker for one test (killed at its end)."""
    yield from _broker(tmp_path)


@pytest.fixture
def mqtt_broker_with_users(tmp_path: Path) -> Iterator[Broker]:
    """A fresh broker that admits only the user ``veil`` with the password ``s3cret-pw``."""
    yield from _broker(tmp_path, {"veil": "s3cret-pw"})


class Publisher:
    """A paho client that publishes at QoS 1 and waits for the broker's acknowledgement."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None):
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str | dict[str, Any] | float) -> None:
        data = json.dumps(payload) if isinstance(payload, dict | int | float) else payload
        self.client.publish(topic, data, qos=1).wait_for_publish(timeout=30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mqtt_broker: Broker) -> Iterator[Publisher]:
    """A publisher on the test's broker."""
    client = Publisher(mqtt_broker.port)
    yield client
    client.close()


def telemetry_source(broker: Broker) -> dict[str, Any]:
    """An MQTT source's config reading every device's telemetry on ``broker`` (temperature
    and cycle time, as the tests publish them)."""
    return {
        "host": "127.0.0.1",
        "port": broker.port,
        "topics": [
            {"topic": "factory/+device/telemetry", "fields": {"$.t": "temp", "$.c": "cycle_ms"}}
        ],
    }
