"""The OPC UA kind of source against a real asyncua server (tests/sources/opcua_machine.py)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

import polars as pl
import pytest

from sandbox.sources.base import Batch, SourceError
from tests.sources.opcua_fixtures import opcua_machine as opcua_machine  # the fixtures
from tests.sources.opcua_fixtures import opcua_machine_secured as opcua_machine_secured
from tests.sources.opcua_fixtures import opcua_machine_with_login as opcua_machine_with_login

FIELDS = {
    "temp": "Spindle.Temp",
    "speed": "Spindle.Speed",
    "parts": "Parts.Count",
    "running": "Running",
    "program": "Program",
}


def _config(machine: Any, mode: str, **more: Any) -> dict[str, Any]:
    return {
        "endpoint": machine.endpoint,
        "fields": {field: machine.node_id(name) for field, name in FIELDS.items()},
        "device": "lathe-1",
        "mode": mode,
        "read_timeout_s": 20,
        **more,
    }


@pytest.fixture
def opened() -> Iterator[Callable[..., Any]]:
    """Opens sources and closes them all at the test's end."""
    from sandbox.sources import opcua

    sources: list[Any] = []

    def open_(config: dict[str, Any], secrets: dict[str, str] | None = None) -> Any:
        assert opcua.check_config(config) == []
        source = opcua.open_source(config, secrets or {})
        sources.append(source)
        return source

    yield open_
    for source in sources:
        source.close()


def _until(condition: Callable[[], Any], what: str, deadline_s: float = 20.0) -> Any:
    """``condition()``'s first true result, polled until a deadline (the machine is loaded)."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {deadline_s} s")
        time.sleep(0.05)


def _read_until(
    source: Any,
    done: Callable[[pl.DataFrame], bool],
    what: str,
    cursor: str | None = None,
    deadline_s: float = 20.0,
) -> tuple[pl.DataFrame, str | None]:
    """Everything a subscribed source read from ``cursor`` on, each read from the cursor
    the previous one gave, until ``done`` holds of it (or a deadline); and the last cursor."""
    frames: list[pl.DataFrame] = []
    position = [cursor]

    def read() -> bool:
        batch: Batch = source.read(position[0])
        assert batch.devices == {"lathe-1": True}
        frames.append(batch.rows)
        position[0] = batch.cursor
        return done(pl.concat(frames))

    _until(read, what, deadline_s)
    return pl.concat(frames), position[0]


def _run(source: Any, cursor: str | None, rows: int) -> tuple[list[int], str | None]:
    """A run as the framework's (``sandbox.sources.runs``) does it: reads from ``cursor``
    until one brings nothing; tried again until it brings ``rows`` rows. The part counts
    it read, and its last cursor."""

    def attempt() -> tuple[list[int], str | None] | None:
        parts, position = [], cursor
        while (batch := source.read(position)).rows.height:
            parts += batch.rows["parts"].to_list()
            position = batch.cursor
        position = batch.cursor
        return (parts, position) if len(parts) >= rows else None

    return _until(attempt, f"a run of {rows} rows")


def test_a_sample_is_one_row_of_the_values_as_served(opcua_machine: Any, opened: Any) -> None:
    opcua_machine.set("Spindle.Temp", 36.75)
    opcua_machine.set("Parts.Count", 41)
    source = opened(_config(opcua_machine, "sampled"))
    before = dt.datetime.now(dt.UTC)
    batch = source.read(None)
    assert batch.rows.columns == ["ts", "temp", "speed", "parts", "running", "program"]
    assert batch.rows.rows() == [(batch.rows["ts"][0], 36.75, 1200, 41, True, "O1234")]
    assert batch.rows.schema["temp"] == pl.Float64
    assert batch.rows.schema["parts"] == pl.Int64
    assert batch.rows.schema["running"] == pl.Boolean
    assert batch.rows.schema["program"] == pl.String
    assert batch.rows["ts"][0] >= before - dt.timedelta(seconds=1)
    assert batch.devices == {"lathe-1": True}
    # The framework reads until a read brings nothing: right after a sample, nothing.
    again = source.read(batch.cursor)
    assert again.rows.height == 0 and again.rows.columns == batch.rows.columns
    assert again.cursor == batch.cursor
    opcua_machine.set("Parts.Count", 42)
    assert source.read(None).rows["parts"].to_list() == [42]


def test_a_sample_is_taken_again_once_the_interval_has_passed(
    opcua_machine: Any, opened: Any
) -> None:
    source = opened(_config(opcua_machine, "sampled", sample_interval_s=0.2))
    first = source.read(None)
    later = _until(lambda: source.read(first.cursor).rows.height, "second sample")
    assert later == 1


def test_devices_per_field_and_one_that_stops_answering(opcua_machine: Any, opened: Any) -> None:
    config = _config(opcua_machine, "sampled")
    config["fields"]["parts"] = {"node": opcua_machine.node_id("Parts.Count"), "device": "press"}
    source = opened(config)
    assert source.read(None).devices == {"lathe-1": True, "press": True}
    opcua_machine.cut_off("Parts.Count")
    try:
        batch = source.read(None)
        assert batch.devices == {"lathe-1": True, "press": False}
        assert batch.rows["parts"].to_list() == [None] and batch.rows["temp"].null_count() == 0
        subscribed = opened({**config, "mode": "subscribed"})
        batch = subscribed.read(None)
        assert batch.devices == {"lathe-1": True, "press": False}
        assert batch.rows["parts"].to_list() == [None]
    finally:
        opcua_machine.set("Parts.Count", 7)


def test_subscribed_reads_every_change_with_its_source_time(
    opcua_machine: Any, opened: Any
) -> None:
    opcua_machine.set("Parts.Count", 100)
    source = opened(_config(opcua_machine, "subscribed", publishing_interval_ms=50))
    # A fresh source's first read has the machine's state when the subscription began.
    first = source.read(None)
    rows = first.rows
    assert rows["parts"].to_list() == [100] and rows["program"].to_list() == ["O1234"]
    stamps = [opcua_machine.set("Parts.Count", n) for n in range(101, 106)]
    changes, cursor = _read_until(
        source, lambda r: 105 in r["parts"].to_list(), "changes", first.cursor
    )
    rows = pl.concat([rows, changes])
    assert rows["parts"].to_list() == [100, 101, 102, 103, 104, 105]
    assert rows["temp"].null_count() == 0 and rows["running"].to_list() == [True] * 6
    # Each change keeps the source timestamp the machine gave it.
    assert rows["ts"].to_list()[1:] == stamps
    assert source.read(cursor).rows.height == 0  # nothing after the last cursor


def test_changes_whose_storage_failed_are_read_again(opcua_machine: Any, opened: Any) -> None:
    opcua_machine.set("Parts.Count", 200)
    source = opened(_config(opcua_machine, "subscribed", publishing_interval_ms=50))
    stored, at = _run(source, None, 1)  # the subscription's first row; its run stored it
    assert stored == [200]
    for n in (201, 202):
        opcua_machine.set("Parts.Count", n)
    failed, _ = _run(source, at, 2)  # its storage fails: its cursor is not kept
    assert failed == [201, 202]
    opcua_machine.set("Parts.Count", 203)
    again, at = _run(source, at, 3)  # the retry reads from the stored cursor
    assert again == [201, 202, 203]
    assert source.read(at).rows.height == 0  # the next run: what the retry read is stored
    assert source.held == 0
    # A run reads on from the cursors it is given (not stored yet); failing, it starts
    # again from the stored one and finds them all.
    opcua_machine.set("Parts.Count", 204)
    _until(lambda: source.held == 1, "the change held")
    first = source.read(at)
    assert first.rows["parts"].to_list() == [204]
    opcua_machine.set("Parts.Count", 205)
    _until(lambda: source.held == 2, "the change held")
    assert source.read(first.cursor).rows["parts"].to_list() == [205]
    opcua_machine.set("Parts.Count", 206)
    _until(lambda: source.held == 3, "the change held")
    # A cursor of another opening (a restarted node) forgets nothing.
    assert source.read("0badc0de:99:0").rows["parts"].to_list() == [204, 205, 206]
    assert _run(source, at, 3)[0] == [204, 205, 206]


def test_a_full_buffer_says_so_until_a_batch_is_stored(opcua_machine: Any, opened: Any) -> None:
    opcua_machine.set("Parts.Count", 300)
    config = _config(opcua_machine, "subscribed", publishing_interval_ms=50, buffer_rows=3)
    source = opened(config)
    assert source.read(None).rows["parts"].to_list() == [300]
    for n in range(301, 305):  # two more fit (three rows held), two are dropped
        opcua_machine.set("Parts.Count", n)
    dropped = "2 changes were dropped: the buffer (setting buffer_rows, 3 changes) was full"
    batch = _until(
        lambda: (b := source.read(None)).problems and b.problems[0].startswith(dropped) and b,
        "the drops reported",
    )
    assert batch.rows["parts"].to_list() == [300, 301, 302] and len(batch.problems) == 1
    assert source.read(None).problems == batch.problems  # not stored yet: still said
    assert source.read(batch.cursor).rows.height == 0  # the run's end
    assert source.read(batch.cursor).problems == ()  # the next run: the batch was stored
    opcua_machine.set("Parts.Count", 305)  # room again
    assert _run(source, batch.cursor, 1)[0] == [305]


def test_an_unknown_node_names_its_field(opcua_machine: Any, opened: Any) -> None:
    for mode in ("sampled", "subscribed"):
        config = _config(opcua_machine, mode)
        config["fields"]["feed"] = f"ns={opcua_machine.namespace};s=No.Such.Node"
        source = opened(config)
        with pytest.raises(SourceError, match=r"^fields\.feed: the server has no such node"):
            source.read(None)


def test_a_value_that_is_no_column_names_its_field_not_the_value(
    opcua_machine: Any, opened: Any
) -> None:
    config = _config(opcua_machine, "sampled")
    config["fields"]["offsets"] = opcua_machine.node_id("Tool.Offsets")
    with pytest.raises(SourceError) as caught:
        opened(config).read(None)
    assert str(caught.value) == (
        "fields.offsets: the node holds a Double array, not a number, flag, text or time"
    )


def test_a_stopped_server_fails_the_read_and_the_source_recovers(
    opcua_machine: Any, opened: Any
) -> None:
    sampled = opened(_config(opcua_machine, "sampled"))
    subscribed = opened(_config(opcua_machine, "subscribed", publishing_interval_ms=50))
    assert sampled.read(None).rows.height == 1
    _read_until(subscribed, lambda r: r.height > 0, "first subscribed row")
    opcua_machine.stop()
    try:
        for source in (sampled, subscribed):
            with pytest.raises(SourceError, match="server"):
                source.read(None)
            with pytest.raises(SourceError, match="endpoint: the server could not be reached"):
                source.read(None)
    finally:
        opcua_machine.start()
    assert sampled.read(None).devices == {"lathe-1": True}
    opcua_machine.set("Parts.Count", 500)
    rows, _ = _read_until(subscribed, lambda r: 500 in r["parts"].to_list(), "a row after restart")
    assert rows["parts"][-1] == 500


def test_a_server_restarted_between_two_reads_is_read_at_once(
    opcua_machine: Any, opened: Any
) -> None:
    # The scheduler keeps a source open between runs: the connection it kept is dead.
    source = opened(_config(opcua_machine, "sampled"))
    assert source.read(None).devices == {"lathe-1": True}
    opcua_machine.stop()
    opcua_machine.start()
    assert source.read(None).devices == {"lathe-1": True}


def test_a_closed_source_refuses_reads(opcua_machine: Any, opened: Any) -> None:
    source = opened(_config(opcua_machine, "subscribed"))
    _read_until(source, lambda r: r.height > 0, "first row")
    source.close()
    source.close()
    with pytest.raises(SourceError, match="closed"):
        source.read(None)


def test_a_server_that_is_not_there(opened: Any) -> None:
    from keys.bao import free_port

    config = {
        "endpoint": f"opc.tcp://127.0.0.1:{free_port()}/",
        "fields": {"temp": "ns=2;s=Spindle.Temp"},
        "mode": "sampled",
    }
    with pytest.raises(SourceError, match=r"^endpoint: the server could not be reached"):
        opened(config).read(None)


def test_login(opcua_machine_with_login: Any, opened: Any) -> None:
    machine = opcua_machine_with_login
    good = opened(_config(machine, "sampled", username="veil"), {"password": "s3cret"})
    assert good.read(None).rows.height == 1
    wrong = opened(_config(machine, "sampled", username="veil"), {"password": "guess"})
    with pytest.raises(SourceError, match=r"^username, password: the server refused") as caught:
        wrong.read(None)
    assert "guess" not in str(caught.value)
    anonymous = opened(_config(machine, "sampled"))
    with pytest.raises(SourceError):
        anonymous.read(None)


def test_signed_and_encrypted_with_the_server_certificate_pinned(
    opcua_machine_secured: Any, opened: Any
) -> None:
    from sandbox.sources import opcua
    from tests.sources.opcua_machine import self_signed

    machine = opcua_machine_secured
    certificate, key = self_signed("urn:veil:node")
    identity = {"certificate": certificate.decode(), "private_key": key.decode()}
    assert opcua.check_secrets(identity) == []
    secured = _config(machine, "sampled", security="Basic256Sha256",
                      server_certificate=machine.certificate, read_timeout_s=4)  # fmt: skip
    batch = opened(secured, identity).read(None)
    assert batch.rows["program"].to_list() == ["O1234"]
    # A server that shows another certificate (a man in the middle, a swapped machine)
    # is not talked to: the pin is the only certificate trusted.
    impostor, _ = self_signed("urn:veil:tests:machine-server")
    with pytest.raises(SourceError):
        pinned = {**secured, "server_certificate": impostor.decode(), "read_timeout_s": 2}
        opened(pinned, identity).read(None)
    # Nor does the machine answer a client without security.
    with pytest.raises(SourceError):
        opened(_config(machine, "sampled", read_timeout_s=4)).read(None)
    # Basic256Sha256 without the node's certificate and key is refused when opened.
    with pytest.raises(SourceError, match=r"^certificate, private_key: Basic256Sha256 needs"):
        opcua.open_source(secured, {})


def test_check_config_names_settings_never_values() -> None:
    from sandbox.sources import opcua

    secret = "hunter2-node"
    problems = opcua.check_config(
        {
            "endpoint": "http://plant:4840",
            "fields": {"temp": secret, "speed": {"node": "ns=2;i=7", "colour": 1}},
            "mode": "polled",
            "timestamp": "temp",
            "read_timeout_s": 0,
            "extra": 1,
        }
    )
    assert problems == [
        "unknown setting 'extra'",
        "endpoint: opc.tcp://host:port, optionally followed by a path",
        "fields.temp: an OPC UA node id, e.g. ns=2;s=Spindle.Temp or ns=3;i=1001",
        "fields.speed: only node and device",
        "timestamp: a name that no field has",
        "mode: sampled or subscribed",
        "read_timeout_s: a number from 0.1 to 600",
    ]
    assert not any(secret in p for p in problems)
    assert opcua.check_config({"endpoint": "opc.tcp://plant:4840/ua", "fields": {"t": "ns=2;s=T"},
                               "mode": "sampled"}) == []  # fmt: skip
    assert opcua.check_config({"endpoint": "opc.tcp://plant/ua", "fields": {"t": "i=85"},
                               "mode": "subscribed"}) == [
        "endpoint: opc.tcp://host:port, optionally followed by a path"
    ]  # fmt: skip
    assert opcua.check_config(
        {
            "endpoint": "opc.tcp://veil:hunter2@plant:4840",
            "fields": {"t": "i=85"},
            "mode": "sampled",
        }
    ) == ["endpoint: opc.tcp://host:port, optionally followed by a path"]
    assert opcua.check_secrets({"password": "x", "token": "y"}) == ["unknown credential 'token'"]
    assert opcua.check_secrets({"certificate": secret}) == [
        "certificate, private_key: both of them (PEM), or neither"
    ]
    assert opcua.check_secrets({"certificate": secret, "private_key": secret}) == [
        "certificate: the node's certificate, PEM (-----BEGIN CERTIFICATE-----)"
    ]
    base = {"endpoint": "opc.tcp://plant:4840", "fields": {"t": "i=85"}, "mode": "sampled"}
    assert opcua.check_config({**base, "security": "Basic128Rsa15"}) == [
        "security: none or Basic256Sha256 (signed and encrypted)"
    ]
    assert opcua.check_config({**base, "security": "Basic256Sha256"}) == [
        "server_certificate: the server's certificate, PEM (-----BEGIN CERTIFICATE-----)"
    ]
    assert opcua.check_config({**base, "server_certificate": secret}) == [
        "server_certificate: only with security Basic256Sha256"
    ]
