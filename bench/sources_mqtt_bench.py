"""Benchmark: messages through the MQTT source vs a bare paho subscriber, and the lag.

Both sides subscribe (QoS 1) on the same amqtt broker (``make mqtt-broker``; the tests'
``Broker``) to the same publisher, a separate process that sends ``--messages`` JSON
telemetry messages at QoS 1. Each side's figure is messages per CPU second of this
process (``time.process_time``: every thread, paho's network thread included), from the
first publish until all are received: the broker and the publisher run in other
processes and are not counted, so the figure is the subscriber's own cost on a loaded
machine. Veil's side is the source as the framework uses it: ``open_source`` with a
mapping of three payload paths and a named level, ``read`` every 20 ms with the last
cursor until every message is a row of a polars frame. The baseline is a paho client
whose ``on_message`` only counts. The sides take turns (interleaved).

The lag is wall time from publishing one message (its payload carries the publisher's
clock) to the ``read`` that returns it, reading every 10 ms: the broker's hop, paho, the
buffer and the frame; a median of ``--lag-messages`` messages sent one at a time.

Run alone: ``.venv/bin/python bench/sources_mqtt_bench.py [--messages N] [--repeats N]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import REPEATS, Row, interleaved, print_rows, series_row
from sandbox.sources import mqtt
from tests.sources.mqtt_broker import Broker, Publisher

TOPIC = {
    "topic": "factory/+line/+device/telemetry",
    "fields": {"$.spindle.temp": "spindle_temp", "$.spindle.rpm": "rpm", "ts": "measured_at"},
}
# The publisher process: sends N messages at QoS 1 as fast as the broker takes them.
_PUBLISHER = """
import json, sys, time
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
port, count = int(sys.argv[1]), int(sys.argv[2])
client = paho.Client(CallbackAPIVersion.VERSION2)
client.max_inflight_messages_set(100)
client.max_queued_messages_set(0)
client.connect("127.0.0.1", port)
client.loop_start()
infos = [client.publish(f"factory/l{i % 3}/press-{i % 50}/telemetry",
                        json.dumps({"spindle": {"temp": 60 + i % 20 / 10, "rpm": 1200 + i % 7},
                                    "ts": time.time()}), qos=1) for i in range(count)]
for info in infos:
    info.wait_for_publish(timeout=120)
client.disconnect()
client.loop_stop()
"""
_TIMEOUT_S = 300.0


def _publish(port: int, count: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _PUBLISHER, str(port), str(count)])  # noqa: S603


def _through_source(port: int, count: int) -> float:
    """Messages per CPU second through the MQTT source, read into frames."""
    config = {"host": "127.0.0.1", "port": port, "topics": [TOPIC], "buffer": count + 10}
    source = mqtt.open_source(config, {})
    try:
        cursor, rows = None, 0
        cpu = time.process_time()
        publisher = _publish(port, count)
        deadline = time.monotonic() + _TIMEOUT_S
        while rows < count and time.monotonic() < deadline:
            time.sleep(0.02)
            batch = source.read(cursor)
            rows, cursor = rows + batch.rows.height, batch.cursor
        cpu = time.process_time() - cpu
        publisher.wait(timeout=60)
        if rows != count:
            raise RuntimeError(f"the source read {rows} of {count} messages")
    finally:
        source.close()
    return count / cpu


def _through_paho(port: int, count: int) -> float:
    """Messages per CPU second through a bare paho subscriber that only counts them."""
    received = 0
    done, subscribed = threading.Event(), threading.Event()

    def on_message(_c: object, _u: object, _m: paho.MQTTMessage) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.subscribe(TOPIC["topic"].replace("+line", "+").replace("+device", "+"), qos=1)
        subscribed.wait(30)
        cpu = time.process_time()
        publisher = _publish(port, count)
        if not done.wait(_TIMEOUT_S):
            raise RuntimeError(f"paho received {received} of {count} messages")
        cpu = time.process_time() - cpu
        publisher.wait(timeout=60)
    finally:
        client.disconnect()
        client.loop_stop()
    return count / cpu


def _lags(port: int, count: int) -> list[float]:
    """Seconds from publishing each of ``count`` messages to the read that returns it."""
    source = mqtt.open_source({"host": "127.0.0.1", "port": port, "topics": [TOPIC]}, {})
    sender = Publisher(port)
    lags: list[float] = []
    try:
        cursor = source.read(None).cursor
        for i in range(count):
            sent = time.time()
            sender.publish("factory/l1/press-1/telemetry", {"spindle": {"temp": i}, "ts": sent})
            while True:
                batch = source.read(cursor)
                if batch.rows.height:
                    lags.append(time.time() - batch.rows["measured_at"][0])
                    cursor = batch.cursor
                    break
                time.sleep(0.01)
    finally:
        sender.close()
        source.close()
    return lags


def run(
    quick: bool = False, messages: int = 20_000, lag_messages: int = 50, repeats: int = REPEATS
) -> list[Row]:
    """Rows: messages per CPU second (source vs bare paho), and the lag publish -> read.

    ``make bench`` runs it within ``bench/sources_bench.py``: 5,000 messages, 20 for the lag.
    """
    messages = 2_000 if quick else messages
    repeats = 2 if quick else repeats
    with tempfile.TemporaryDirectory(prefix="veil-mqtt-bench-") as directory:
        broker = Broker(Path(directory))
        broker.start()
        try:
            veil, bare = interleaved(
                repeats,
                lambda: _through_source(broker.port, messages),
                lambda: _through_paho(broker.port, messages),
            )
            lags = _lags(broker.port, 10 if quick else lag_messages)
        finally:
            broker.kill()
    return [
        series_row(
            f"MQTT source: {messages} msgs received, per CPU s (vs bare paho)",
            veil,
            bare,
            "msg/s",
            ">= 0.5x",
            lambda _v, ratio: ratio is not None and ratio >= 0.5,
        ),
        series_row(
            f"MQTT lag publish -> read (median of {len(lags)}, read every 10 ms)",
            [statistics.median(lags) * 1000],
            None,
            "ms",
            "report",
            None,
        )
        | {"veil_min": round(min(lags) * 1000, 3), "veil_max": round(max(lags) * 1000, 3)},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--lag-messages", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="2000 messages, 2 turns")
    args = parser.parse_args()
    print_rows(run(args.quick, args.messages, args.lag_messages))


if __name__ == "__main__":
    main()
