"""The MQTT kind of source against a real broker (amqtt, started per test on loopback).

Nothing here waits a fixed time: each test polls for the condition it needs, with a
deadline (the suite runs on two loaded cores).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl
import pytest

from sandbox.sources import mqtt
from sandbox.sources.base import SourceError
from sandbox.sources.mqtt import MqttBatch, MqttSource
from sandbox.sources.mqtt_columns import frame
from sandbox.sources.mqtt_topics import pattern
from tests.sources.mqtt_broker import Broker, Publisher, wait_for
from tests.sources.mqtt_broker import mqtt_broker as mqtt_broker  # the fixtures, for pytest
from tests.sources.mqtt_broker import mqtt_broker_with_users as mqtt_broker_with_users
from tests.sources.mqtt_broker import publisher as publisher

pytestmark = pytest.mark.integration

TELEMETRY = {
    "topic": "factory/+line/+device/telemetry",
    "fields": {"$.spindle.temp": "spindle_temp", "ts": "measured_at", "$.axes.1": "y"},
}


def settings(broker: Broker, *topics: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": broker.port, "topics": list(topics or [TELEMETRY]), **more}


@pytest.fixture
def opened() -> Iterator[list[MqttSource]]:
    """Sources a test opens, closed at its end."""
    sources: list[MqttSource] = []
    yield sources
    for source in sources:
        source.close()


def open_(opened: list[MqttSource], config: dict[str, Any], **secrets: str) -> MqttSource:
    source = mqtt.open_source(config, secrets)
    opened.append(source)
    return source


def read_until(source: MqttSource, rows: int, cursor: str | None = None) -> MqttBatch:
    """The first read (from ``cursor``) with at least ``rows`` rows."""
    found = wait_for(
        lambda: (batch := source.read(cursor)).rows.height >= rows and batch, f"{rows} rows"
    )
    assert isinstance(found, MqttBatch)
    return found


@dataclass(frozen=True)
class Run:
    rows: pl.DataFrame
    cursor: str | None
    devices: Mapping[str, bool]
    problems: tuple[str, ...]


def run(source: MqttSource, cursor: str | None, rows: int) -> Run:
    """A run as the framework's (``sandbox.sources.runs``) does it: reads from the stored
    ``cursor`` until one brings nothing; tried again until it brings ``rows`` rows."""

    def attempt() -> Run | None:
        frames, position, problems = [], cursor, ()
        while (batch := source.read(position)).rows.height:
            assert isinstance(batch, MqttBatch)
            frames.append(batch.rows)
            position, problems = batch.cursor, problems + batch.problems
        found = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
        return Run(found, position, batch.devices, problems) if found.height >= rows else None

    found = wait_for(attempt, f"a run with {rows} rows")
    assert isinstance(found, Run)
    return found


def test_check_config_names_the_setting_never_its_value() -> None:
    config = {
        "host": "",
        "port": 70000,
        "ca_file": "/secret/place.pem",
        "client_id": "x" * 200,
        "devices": "press-77",
        "topics": [
            {"topic": "a/b#/c", "fields": {"$..x": "value-sekrit"}},
            {"topic": "a/+device/#/z", "fields": {"v": "topic"}, "device": {"path": "$$"}},
            {"topic": "ok/+", "fields": {"v": "v"}, "mystery": "zzz-hidden"},
        ],
        "password": "hunter2",
    }
    problems = mqtt.check_config(config)
    text = "\n".join(problems)
    for setting in ("password:", "host:", "port:", "ca_file:", "client_id:", "devices:"):
        assert setting in text
    for where in ("topics[0].topic", "topics[0].fields", "topics[1].topic", "topics[1].device"):
        assert where in text
    assert "topics[1].fields: the field name topic is reserved" in text
    assert "topics[2].mystery: unknown setting" in text
    for value in ("hunter2", "/secret/place.pem", "press-77", "value-sekrit", "zzz-hidden", "$$"):
        assert value not in text
    assert mqtt.check_config({"host": "h", "topics": [TELEMETRY]}) == []
    secrets = mqtt.check_secrets({"username": "veil", "token": "tok-zz9"})
    assert secrets == [
        "token: unknown credential of an MQTT source (known: username, password)",
        "secrets: give username and password, or neither",
    ]
    assert mqtt.check_secrets({"username": "veil", "password": "pw"}) == []


def test_wildcards_map_levels_and_payload_paths(
    mqtt_broker: Broker, publisher: Publisher, opened: list[MqttSource]
) -> None:
    plant = {"topic": "plant/#", "fields": {"$": "value"}, "device": {"path": "$"}}
    source = open_(opened, settings(mqtt_broker, TELEMETRY, plant))
    first = {"spindle": {"temp": 71.5}, "ts": 1700000000, "axes": [1, 2]}
    publisher.publish("factory/l1/press-1/telemetry", first)
    publisher.publish("factory/l1/press-1/other", {"spindle": {"temp": 1}})  # no pattern
    publisher.publish("factory/l2/press-2/telemetry", {"spindle": {"temp": 69}, "ts": 1700000001})
    publisher.publish("plant/hall/3", "42")
    batch = read_until(source, 3)
    rows = batch.rows.sort("topic")
    assert rows.columns == [
        "topic", "device", "received_at", "line", "spindle_temp", "measured_at", "y", "value"
    ]  # fmt: skip
    assert rows["topic"].to_list() == [
        "factory/l1/press-1/telemetry", "factory/l2/press-2/telemetry", "plant/hall/3"
    ]  # fmt: skip
    assert rows["device"].to_list() == ["press-1", "press-2", "42"]
    assert rows["line"].to_list() == ["l1", "l2", None]
    assert rows["spindle_temp"].to_list() == [71.5, 69.0, None]
    assert rows["measured_at"].to_list() == [1700000000, 1700000001, None]
    assert rows["y"].to_list() == [2, None, None]
    assert rows["value"].to_list() == [None, None, 42]
    assert rows["received_at"].dtype == pl.Datetime("us", "UTC")
    assert rows["received_at"].null_count() == 0
    # The second telemetry message lacked $.axes.1: counted, with no value.
    assert batch.problems == ("topics[0]: 1 messages lacked the path $.axes.1; its field is empty",)


def test_devices_that_sent_nothing_count_as_not_answered(
    mqtt_broker: Broker, publisher: Publisher, opened: list[MqttSource]
) -> None:
    config = settings(mqtt_broker, devices=["press-1", "press-2", "press-3"])
    source = open_(opened, config)
    for device in ("press-1", "press-2", "press-9"):
        publisher.publish(f"factory/l1/{device}/telemetry", {"spindle": {"temp": 1}})
    first = run(source, None, 3)
    assert first.devices == {"press-1": True, "press-2": True, "press-3": False, "press-9": True}
    publisher.publish("factory/l1/press-2/telemetry", {"spindle": {"temp": 2}})
    second = run(source, first.cursor, 1)
    assert second.devices == {
        "press-1": False, "press-2": True, "press-3": False, "press-9": False
    }  # fmt: skip
    empty = source.read(second.cursor)
    assert empty.rows.height == 0
    assert not any(empty.devices.values())


def test_bad_payloads_are_counted_never_shown(
    mqtt_broker: Broker, publisher: Publisher, opened: list[MqttSource]
) -> None:
    source = open_(opened, settings(mqtt_broker))
    topic = "factory/l1/press-1/telemetry"
    publisher.publish(topic, b"secret-reading=99.5")  # not JSON
    publisher.publish(topic, b"\xff\xfe{}")  # not UTF-8
    publisher.publish(topic, {"spindle": {"heat": "secret-value"}, "ts": 5})  # paths missing
    publisher.publish(topic, {"spindle": {"temp": "hot-secret"}, "ts": 6, "axes": [0, 1]})
    publisher.publish(topic, {"spindle": {"temp": 3}, "ts": 7, "axes": [0, {"deep": 1}]})
    batch = read_until(source, 3)
    assert batch.rows.height == 3  # the two payloads that are not JSON are left out
    assert batch.problems == (
        "topics[0]: 2 messages were not JSON in UTF-8 and were left out",
        "topics[0]: 1 messages lacked the path $.axes.1; its field is empty",
        "topics[0]: 1 messages lacked the path $.spindle.temp; its field is empty",
    )
    for problem in batch.problems:
        assert "secret" not in problem and "99.5" not in problem
    # Mixed and nested values are JSON text, for the declaration's validation to judge.
    assert batch.rows["spindle_temp"].to_list() == [None, "hot-secret", "3"]
    assert batch.rows["y"].to_list() == [None, "1", '{"deep": 1}']
    assert batch.rows["measured_at"].to_list() == [5, 6, 7]


def test_a_batch_whose_storage_failed_is_read_again(
    mqtt_broker: Broker, publisher: Publisher, opened: list[MqttSource]
) -> None:
    source = open_(opened, settings(mqtt_broker))
    telemetry = "factory/l1/press-1/telemetry"
    for temp in (1, 2):
        publisher.publish(telemetry, {"spindle": {"temp": temp}})
    stored = run(source, None, 2)
    publisher.publish(telemetry, {"spindle": {"temp": 3}})
    failed = run(source, stored.cursor, 1)  # its storage fails: its cursor is not kept
    assert failed.rows["spindle_temp"].to_list() == [3]
    publisher.publish(telemetry, {"spindle": {"temp": 4}})
    again = run(source, stored.cursor, 2)  # the retry reads from the stored cursor
    assert again.rows["spindle_temp"].to_list() == [3, 4]
    assert source.read(again.cursor).rows.height == 0
    # A run reads on from the cursors it is given (not stored yet); failing, it starts
    # again from the stored one and finds them all.
    publisher.publish(telemetry, {"spindle": {"temp": 5}})
    wait_for(lambda: source.held == 1, "the message held")
    first = source.read(again.cursor)
    publisher.publish(telemetry, {"spindle": {"temp": 6}})
    wait_for(lambda: source.held == 2, "the message held")
    assert source.read(first.cursor).rows["spindle_temp"].to_list() == [6]
    publisher.publish(telemetry, {"spindle": {"temp": 7}})
    wait_for(lambda: source.held == 3, "the message held")
    # A cursor of another opening (a restarted node) forgets nothing.
    assert source.read("0badc0de:99:0").rows["spindle_temp"].to_list() == [5, 6, 7]
    assert run(source, again.cursor, 3).rows["spindle_temp"].to_list() == [5, 6, 7]


def test_a_full_buffer_says_so_until_a_batch_is_stored(
    mqtt_broker: Broker, publisher: Publisher, opened: list[MqttSource]
) -> None:
    temps = {**TELEMETRY, "fields": {"$.spindle.temp": "spindle_temp"}}
    source = open_(opened, settings(mqtt_broker, temps, buffer=3))
    for temp in range(5):
        publisher.publish("factory/l1/press-1/telemetry", {"spindle": {"temp": temp}})
    dropped = "2 messages were dropped: the buffer (setting buffer, 3 messages) was full"
    batch = wait_for(
        lambda: (b := source.read(None)).problems and b.problems[0].startswith(dropped) and b,
        "the drops reported",
    )
    assert batch.rows["spindle_temp"].to_list() == [0, 1, 2]
    assert len(batch.problems) == 1 and batch.problems[0].startswith(dropped)
    assert source.read(None).problems == batch.problems  # not stored yet: still said
    assert source.read(batch.cursor).rows.height == 0  # the run's end
    assert source.read(batch.cursor).problems == ()  # the next run: the batch was stored


def test_a_killed_broker_fails_reads_then_the_source_reconnects(
    mqtt_broker: Broker, publisher: Publisher, opened: list[MqttSource]
) -> None:
    source = open_(opened, settings(mqtt_broker))
    publisher.publish("factory/l1/press-1/telemetry", {"spindle": {"temp": 1}})
    before = read_until(source, 1)
    mqtt_broker.kill()
    error = wait_for(lambda: _read_error(source), "a read to fail")
    assert "not connected" in str(error)
    assert "127.0.0.1" not in str(error) and str(mqtt_broker.port) not in str(error)
    mqtt_broker.start()  # same port
    wait_for(lambda: _read_error(source) is None, "the source to reconnect", timeout=120)
    after = Publisher(mqtt_broker.port)
    try:
        after.publish("factory/l1/press-1/telemetry", {"spindle": {"temp": 2}})
        # The unstored batch from before the outage comes again, with what came after.
        batch = read_until(source, 2, None)
    finally:
        after.close()
    assert batch.rows["spindle_temp"].to_list() == [1, 2]
    assert source.read(batch.cursor).rows.height == 0
    assert before.cursor is not None


def _read_error(source: MqttSource) -> SourceError | None:
    try:
        source.read(None)
    except SourceError as error:
        return error
    return None


def test_a_wrong_password_is_refused_without_showing_it(
    mqtt_broker_with_users: Broker, opened: list[MqttSource]
) -> None:
    config = settings(mqtt_broker_with_users)
    with pytest.raises(SourceError) as refused:
        open_(opened, config, username="veil", password="wrong-pw-123")
    assert "username and password" in str(refused.value)
    assert "wrong-pw-123" not in str(refused.value)
    with pytest.raises(SourceError):
        open_(opened, config)  # anonymous
    source = open_(opened, config, username="veil", password="s3cret-pw")
    sender = Publisher(mqtt_broker_with_users.port, "veil", "s3cret-pw")
    try:
        sender.publish("factory/l1/press-1/telemetry", {"spindle": {"temp": 1}})
        assert read_until(source, 1).rows["spindle_temp"].to_list() == [1]
    finally:
        sender.close()


def test_an_unreachable_broker_and_a_closed_source_are_errors(
    mqtt_broker: Broker, opened: list[MqttSource]
) -> None:
    config = settings(mqtt_broker)
    source = open_(opened, config)
    source.close()
    with pytest.raises(SourceError, match="closed"):
        source.read(None)
    mqtt_broker.kill()
    with pytest.raises(SourceError, match="cannot be reached"):
        open_(opened, config)
    with pytest.raises(SourceError, match="secrets"):
        open_(opened, config, username="only")
    with pytest.raises(SourceError, match="topics"):
        open_(opened, {**config, "topics": []})
    with pytest.raises(SourceError, match="ca_file"):
        open_(opened, {**config, "tls": True, "ca_file": str(mqtt_broker.directory / "none.pem")})


def test_columns_keep_one_type_or_become_json_text() -> None:
    rows = [{"a": 1, "b": True, "c": 2**70, "d": "x"}, {"a": 2.5, "b": None, "c": 1, "d": [1]}]
    built = frame(rows, ["a", "b", "c", "d", "e"])
    assert built.schema == {
        "a": pl.Float64, "b": pl.Boolean, "c": pl.String, "d": pl.String, "e": pl.Null
    }  # fmt: skip
    assert built["c"].to_list() == [str(2**70), "1"]
    assert built["d"].to_list() == ["x", "[1]"]


@pytest.mark.parametrize(
    ("subscription", "topic", "matches"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/c/d", False),
        ("a/+/c", "a//c", True),
        ("a/b/#", "a/b", True),  # # also matches its parent level
        ("a/b/#", "a/b/c/d", True),
        ("a/b/#", "a/x", False),
        ("#", "$SYS/broker/load", False),  # $ topics match no wildcard first level
        ("+/broker/load", "$SYS/broker/load", False),
        ("$SYS/#", "$SYS/broker/load", True),
    ],
)
def test_topic_patterns_match_as_mqtt_says(subscription: str, topic: str, matches: bool) -> None:
    found = pattern(0, {"topic": subscription, "fields": {"$": "value"}})
    assert found.matches(topic.split("/")) is matches
