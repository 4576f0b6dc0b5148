"""The MQTT kind of source: topic patterns subscribed on a broker, JSON payloads as rows.

Settings (``config``)::

    {"host": "broker.plant.local", "port": 1883,          # port: 1883, or 8883 with tls
     "tls": false, "ca_file": "/etc/veil/plant-ca.pem",   # optional; cert_file, key_file too
     "client_id": "veil-plant-1",                          # optional: a persistent session
     "devices": ["press-1", "press-2"],                    # optional: watched for liveness
     "buffer": 100000,                                     # optional: messages held at most
     "topics": [{"topic": "factory/+device/telemetry",
                 "fields": {"$.spindle.temp": "spindle_temp", "ts": "measured_at"}},
                {"topic": "line2/#", "fields": {"$": "value"},
                 "device": {"path": "$.machine"}}]}

Secrets: ``username`` and ``password`` (both or neither). Every subscription is QoS 1.
``topics`` patterns and payload paths are described in :mod:`sandbox.sources.mqtt_topics`.

**Rows.** One per message: ``topic``, ``device``, ``received_at`` (arrival, UTC), each
named ``+`` level and each mapped field (null where a message's topic does not map it). A
timestamp in the payload is a mapped field like any other. A column whose values are all
booleans, integers, numbers or strings keeps that type (all null: Null, so the batches
of a run join on the others' type); mixed or nested values become
JSON text, for the declaration's validation to accept or refuse.

**Bad messages.** A payload that is not JSON (UTF-8) is left out; a payload lacking a
mapped path gives a null field. Both are counted in the batch's ``problems``
(``topics[i]: N messages ...``), never with a value.

**The buffer and at-least-once.** Messages wait in a bounded buffer (setting ``buffer``),
held until the rows made of them are stored (:mod:`sandbox.sources.held`): ``read(cursor)``
returns the messages held after ``cursor`` (all of them for ``None`` or a cursor of
another opening), with a cursor naming the last one, and forgets held messages only when
given a cursor that marks stored rows. A run whose rows were not stored is therefore read
again, with what arrived since, by the next run. When the buffer is full, new messages
are dropped and counted: every batch until the drop is behind a stored cursor says how
many (``problems``), so read more often or raise ``buffer``. Messages held only in
memory are lost if the source is closed or the node stops; with a ``client_id`` the
broker keeps the session's QoS 1 messages while Veil is disconnected, and sends them on
reconnection.

**A broker that is down.** ``read`` raises :class:`SourceError` (the buffer is kept, no
batch is returned) until the source is connected and subscribed again; the client
reconnects by itself, waiting 1 s, then twice as long each time, up to 60 s.

**Liveness.** ``devices`` says, for each device of the setting ``devices`` and each one
seen since the source opened, whether it sent a message since the stored cursor (the run's
interval: every read of a run says the same, an empty last one included).
"""

from __future__ import annotations

import contextlib
import secrets as random_ids
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from i18n import Msg
from sandbox.sources.base import Batch, SourceError
from sandbox.sources.held import Held
from sandbox.sources.mqtt_columns import frame
from sandbox.sources.mqtt_topics import Pattern, defect_message, pattern, topic_problems

_KEYS = frozenset(
    {
        "host",
        "port",
        "tls",
        "ca_file",
        "cert_file",
        "key_file",
        "client_id",
        "devices",
        "buffer",
        "keepalive",
        "topics",
    }
)
DEFAULT_BUFFER = 100_000
CONNECT_TIMEOUT_S = 15.0
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 60


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_config(config: Mapping[str, Any]) -> list[str]:
    """The settings' problems, each naming its setting (never a value); empty when fine."""
    problems: list[str] = [
        Msg("{key}: unknown setting of an MQTT source", key=key)
        for key in sorted(set(config) - _KEYS, key=str)
    ]
    if not isinstance(config.get("host"), str) or not config["host"].strip():
        problems.append(Msg("host: give the broker's host name or address"))
    if "port" in config and not _int_in(config["port"], 1, 65535):
        problems.append(Msg("port: give a port number from 1 to 65535"))
    if "tls" in config and not isinstance(config["tls"], bool):
        problems.append(Msg("tls: give true or false"))
    for key in ("ca_file", "cert_file", "key_file"):
        if key in config:
            if not isinstance(config[key], str) or not config[key]:
                problems.append(Msg("{key}: give a file path", key=key))
            elif config.get("tls") is not True:
                problems.append(Msg("{key}: only used with tls: true", key=key))
    if ("cert_file" in config) != ("key_file" in config):
        problems.append(Msg("cert_file, key_file: give both (a client certificate) or neither"))
    client_id = config.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or not 0 < len(client_id) <= 128):
        problems.append(Msg("client_id: give 1 to 128 characters, or leave it out"))
    devices = config.get("devices", [])
    if not isinstance(devices, list) or not all(isinstance(d, str) and d for d in devices):
        problems.append(Msg("devices: give a list of device names"))
    if "buffer" in config and not _int_in(config["buffer"], 1, 10_000_000):
        problems.append(Msg("buffer: give a number of messages from 1 to 10000000"))
    if "keepalive" in config and not _int_in(config["keepalive"], 5, 3600):
        problems.append(Msg("keepalive: give seconds from 5 to 3600"))
    topics = config.get("topics")
    if not isinstance(topics, list) or not topics:
        problems.append(Msg("topics: give a list of topic patterns, each with its fields"))
    else:
        for index, entry in enumerate(topics):
            problems += topic_problems(index, entry)
    return problems


def check_secrets(secrets: Mapping[str, str]) -> list[str]:
    """The credentials' problems, by name: ``username`` and ``password`` (text), both or
    neither."""
    problems: list[str] = [
        Msg("{name}: unknown credential of an MQTT source (known: username, password)", name=name)
        for name in sorted(set(secrets) - {"username", "password"}, key=str)
    ]
    if ("username" in secrets) != ("password" in secrets):
        problems.append(Msg("secrets: give username and password, or neither"))
    if not all(isinstance(value, str) for value in secrets.values()):
        problems.append(Msg("secrets: give username and password as text"))
    return problems


def continuous(config: Mapping[str, Any]) -> bool:
    """Always: the messages are held by the opening that received them (one reader)."""
    return True


def open_source(config: Mapping[str, Any], secrets: Mapping[str, str]) -> MqttSource:
    """Connect to the broker and subscribe; :class:`SourceError` when it cannot be done."""
    problems = check_config(config)
    if problems:
        raise SourceError(problems[0])
    if secret_problems := check_secrets(secrets):
        raise SourceError(secret_problems[0])
    try:
        source = MqttSource(config, secrets)
    except (OSError, ValueError) as error:  # tls_set reads the files at once
        raise SourceError(
            Msg(
                "the files of settings ca_file, cert_file and key_file cannot be used "
                "({error}); check them",
                error=type(error).__name__,
            )
        ) from None
    try:
        source.start()
    except BaseException:
        source.close()
        raise
    return source


@dataclass(frozen=True)
class _Message:
    pattern: int  # index in topics
    row: dict[str, Any] | None  # None: left out (defects say why)
    defects: tuple[str, ...]


class MqttSource:
    """An open MQTT source (see the module's description): use :func:`open_source`."""

    def __init__(self, config: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        self._patterns: list[Pattern] = [
            pattern(index, entry) for index, entry in enumerate(config["topics"])
        ]
        self._host: str = config["host"]
        tls = bool(config.get("tls", False))
        self._port: int = config.get("port", 8883 if tls else 1883)
        self._keepalive: int = config.get("keepalive", 60)
        self._watched: dict[str, None] = dict.fromkeys(config.get("devices", []))
        self._lock = threading.Lock()
        self._held: Held[_Message] = Held(config.get("buffer", DEFAULT_BUFFER))
        self._held_devices: Counter[str] = Counter()  # devices of the held messages
        self._subscribed = threading.Event()
        self._failure: str | None = None  # why the client is not connected, when it is not
        self._closed = False
        client_id = config.get("client_id")
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or "veil-" + random_ids.token_hex(8),
            clean_session=client_id is None,
        )
        if "username" in secrets:
            self._client.username_pw_set(secrets["username"], secrets["password"])
        if tls:
            self._client.tls_set(
                ca_certs=config.get("ca_file"),
                certfile=config.get("cert_file"),
                keyfile=config.get("key_file"),
            )
        self._client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self) -> None:
        """Connect and subscribe, waiting for the broker's answers."""
        try:
            self._client.connect(self._host, self._port, self._keepalive)
        except (OSError, ValueError) as error:
            raise SourceError(
                Msg(
                    "the MQTT broker of settings host and port cannot be reached ({error}); "
                    "check them, and tls",
                    error=type(error).__name__,
                )
            ) from None
        self._client.loop_start()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not self._subscribed.wait(0.05):
            if self._failure is not None and not self._failure.startswith("lost:"):
                raise SourceError(self._failure_message())
            if time.monotonic() > deadline:
                raise SourceError(
                    Msg(
                        "the MQTT broker of settings host and port did not accept the "
                        "connection and subscriptions within {seconds} s",
                        seconds=int(CONNECT_TIMEOUT_S),
                    )
                )

    # The client's thread calls these.
    def _on_connect(
        self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if reason.is_failure:
            self._failure = "refused:" + reason.getName()
            return
        self._failure = None
        client.subscribe([(p.subscription, 1) for p in self._patterns])

    def _on_subscribe(
        self, _c: Any, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        if any(reason.is_failure for reason in reasons):
            self._failure = "subscribe"
        else:
            self._subscribed.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self._subscribed.clear()
        if self._failure is None:
            self._failure = "lost:" + reason.getName()

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        received_at = datetime.now(UTC)
        topic = message.topic
        parts = topic.split("/")
        for found in self._patterns:
            if found.matches(parts):
                break
        else:
            return  # another subscription of the same session (client_id)
        row, defects = found.row(topic, parts, message.payload)
        if row is not None:
            row["received_at"] = received_at
        with self._lock:
            held = self._held.add(_Message(found.index, row, tuple(defects)))
            if held and row is not None and row["device"] is not None:
                self._held_devices[row["device"]] += 1

    def _failure_message(self) -> str:
        failure = self._failure or ""
        if failure.startswith("refused:"):
            return Msg(
                "the MQTT broker refused the connection ({reason}); check the secrets "
                "username and password, and client_id",
                reason=failure.removeprefix("refused:"),
            )
        if failure == "subscribe":
            return Msg(
                "the MQTT broker refused a subscription of the setting topics; "
                "check that the user may read them"
            )
        return Msg(
            "the MQTT broker of settings host and port is not connected ({reason}); "
            "reconnecting by itself",
            reason=failure.removeprefix("lost:") or "connecting",
        )

    def read(self, cursor: str | None) -> Batch:
        """The messages held after ``cursor``; held ones at or before it are forgotten
        when ``cursor`` marks stored rows (see the module's description)."""
        if self._closed:
            raise SourceError(Msg("the MQTT source was closed; open it again"))
        with self._lock:
            if not self._subscribed.is_set():  # before the read: a failed read issues nothing
                raise SourceError(self._failure_message())
            taken = self._held.read(cursor)
            for message in taken.forgotten:
                self._release(message)
            answered = set(self._held_devices)
        self._watched.update(dict.fromkeys(sorted(answered - set(self._watched))))
        messages = taken.items
        return Batch(
            rows=frame([m.row for m in messages if m.row is not None], self._columns()),
            cursor=taken.cursor,
            devices={device: device in answered for device in self._watched},
            problems=tuple(self._problems(messages, taken.dropped)),
        )

    def _release(self, message: _Message) -> None:
        if message.row is not None and message.row["device"] is not None:
            self._held_devices[message.row["device"]] -= 1
            if not self._held_devices[message.row["device"]]:
                del self._held_devices[message.row["device"]]

    @property
    def held(self) -> int:
        """How many messages the buffer holds (read or not, not yet stored)."""
        with self._lock:
            return len(self._held)

    def _problems(self, messages: list[_Message], dropped: int) -> list[str]:
        counts = Counter((m.pattern, defect) for m in messages for defect in m.defects)
        problems: list[str] = [
            defect_message(index, defect, count)
            for (index, defect), count in sorted(counts.items())
        ]
        if dropped:
            problems.append(
                Msg(
                    "{count} messages were dropped: the buffer (setting buffer, {size} messages) "
                    "was full; read more often or raise buffer",
                    count=dropped,
                    size=self._held.capacity,
                )
            )
        return problems

    def _columns(self) -> list[str]:
        names = ["topic", "device", "received_at"]
        for found in self._patterns:
            names += [name for name in found.names if name not in names]
        return names

    def close(self) -> None:
        """Disconnect and stop the client's thread; held messages are forgotten."""
        self._closed = True
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()
