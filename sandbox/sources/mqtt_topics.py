"""The MQTT source's settings: topic patterns, payload paths, and what a message becomes.

A topic pattern is an MQTT subscription (``+`` one level, ``#`` the rest) whose ``+``
levels may carry a name (``factory/+line/+device/telemetry``): the named level's value
becomes a field of that name, and a level named ``device`` is the device the message
belongs to. A payload path picks a value from a JSON payload: ``$.spindle.temp``,
``spindle.temp`` (the ``$.`` is optional), ``$.axes.0`` (a list's first item) or ``$``
(the whole payload, for a topic that carries one plain value).

Checking the settings (:func:`problems`) names the setting, never its value; the checked
settings become :class:`Pattern` objects (:func:`patterns`) that turn a message into a row
(:meth:`Pattern.row`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from i18n import Msg

#: Fields every row has, whatever the topic: a mapped field may not take these names.
TOPIC, DEVICE, RECEIVED_AT = "topic", "device", "received_at"
RESERVED = frozenset({TOPIC, DEVICE, RECEIVED_AT})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOPIC_KEYS = frozenset({"topic", "fields", "device"})


@dataclass(frozen=True)
class Path:
    """A checked payload path: the keys (and list indexes) from the payload's root."""

    text: str
    steps: tuple[str, ...]

    def find(self, payload: Any) -> tuple[bool, Any]:
        """``(True, value)`` where the payload has this path, else ``(False, None)``."""
        value = payload
        for step in self.steps:
            if isinstance(value, dict) and step in value:
                value = value[step]
            elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
                value = value[int(step)]
            else:
                return False, None
        return True, value


def parse_path(text: str) -> Path | None:
    """The path ``text`` names, or None when it is not one."""
    body = text[1:] if text.startswith("$") else text
    if body == "":
        return Path(text, ()) if text == "$" else None
    if text.startswith("$"):
        if not body.startswith("."):
            return None
        body = body[1:]
    steps = tuple(body.split("."))
    if any(step == "" for step in steps):
        return None
    return Path(text, steps)


@dataclass(frozen=True)
class Pattern:
    """One entry of the setting ``topics``, checked: what a message on it becomes."""

    index: int
    subscription: str  # the pattern with its level names taken out
    subscription_levels: tuple[str, ...]
    levels: tuple[tuple[str, int], ...]  # named levels: (field, level index)
    fields: tuple[tuple[Path, str], ...]  # payload path -> field
    device_level: int | None
    device_path: Path | None

    def matches(self, parts: list[str]) -> bool:
        """Whether a topic, split into its levels, matches this pattern's subscription.

        (paho's ``topic_matches_sub`` builds a matcher at each call: a third of a
        message's cost.) A topic starting with ``$`` matches no wildcard first level.
        """
        wanted = self.subscription_levels
        if parts[0].startswith("$") and wanted[0] in ("+", "#"):
            return False
        for position, level in enumerate(wanted):
            if level == "#":
                return True
            if position >= len(parts) or (level != "+" and level != parts[position]):
                return False
        return len(parts) == len(wanted)

    @property
    def names(self) -> tuple[str, ...]:
        """The fields this pattern fills, besides the reserved ones."""
        return tuple(name for name, _ in self.levels if name != DEVICE) + tuple(
            name for _, name in self.fields
        )

    def row(
        self, topic: str, parts: list[str], payload: bytes | bytearray
    ) -> tuple[dict[str, Any] | None, list[str]]:
        """The row a message on ``topic`` (split: ``parts``) becomes, and its defects.

        A payload that is not JSON (in UTF-8) gives no row (defect ``"json"``); a path it
        lacks gives a null field (defect ``"path:<path>"``), for the declaration's
        validation to accept or refuse like any missing value.
        """
        try:
            document = json.loads(payload)
        except ValueError:  # UnicodeDecodeError is one
            return None, ["json"]
        row: dict[str, Any] = {TOPIC: topic, DEVICE: None}
        for name, level in self.levels:
            if name != DEVICE:  # the device is set below, whichever way it is given
                row[name] = parts[level] if level < len(parts) else None
        defects: list[str] = []
        for path, name in self.fields:
            found, value = path.find(document)
            if not found:
                defects.append("path:" + path.text)
            row[name] = value
        if self.device_level is not None:
            row[DEVICE] = parts[self.device_level] if self.device_level < len(parts) else None
        elif self.device_path is not None:
            found, value = self.device_path.find(document)
            if not found or value is None or isinstance(value, dict | list):
                defects.append("device")
            else:
                row[DEVICE] = str(value)
        return row, defects


def defect_message(index: int, defect: str, count: int) -> Msg:
    """What a counted defect of messages on ``topics[index]`` says (no value in it)."""
    if defect == "json":
        return Msg(
            "topics[{index}]: {count} messages were not JSON in UTF-8 and were left out",
            index=index,
            count=count,
        )
    if defect == "device":
        return Msg(
            "topics[{index}]: {count} messages had no device at the path of setting device "
            "(or not a single value); their device is empty",
            index=index,
            count=count,
        )
    return Msg(
        "topics[{index}]: {count} messages lacked the path {path}; its field is empty",
        index=index,
        count=count,
        path=defect.removeprefix("path:"),
    )


def _pattern_problems(where: str, topic: Any) -> tuple[list[str], dict[str, int]]:
    """The problems of a topic pattern, and its named levels (name -> level index)."""
    if not isinstance(topic, str) or topic == "" or "\x00" in topic:
        return [
            Msg(
                "{where}.topic: give a topic pattern such as factory/+device/telemetry", where=where
            )
        ], {}
    problems: list[str] = []
    named: dict[str, int] = {}
    levels = topic.split("/")
    for position, level in enumerate(levels):
        if level == "#":
            if position != len(levels) - 1:
                problems.append(Msg("{where}.topic: # may only be the last level", where=where))
        elif level.startswith("+"):
            name = level[1:]
            if name and not _NAME.match(name):
                problems.append(
                    Msg(
                        "{where}.topic: a + level is + alone or + and a field name "
                        "(letters, digits, _), such as +device",
                        where=where,
                    )
                )
            elif name in named:
                problems.append(Msg("{where}.topic: a level name is given twice", where=where))
            elif name:
                named[name] = position
        elif "+" in level or "#" in level:
            problems.append(Msg("{where}.topic: + and # stand for whole levels only", where=where))
    return problems, named


def _device_problems(where: str, device: Any, named: Mapping[str, int]) -> list[str]:
    if device is None:
        return []
    if isinstance(device, Mapping) and set(device) == {"level"}:
        level = device["level"]
        if isinstance(level, str) and level in named:
            return []
        if isinstance(level, int) and not isinstance(level, bool) and level >= 0:
            return []
    elif (
        isinstance(device, Mapping)
        and set(device) == {"path"}
        and isinstance(device["path"], str)
        and parse_path(device["path"]) is not None
    ):
        return []
    return [
        Msg(
            '{where}.device: give {{"level": N}} (a topic level, from 0, or a named + level) '
            'or {{"path": "$.machine.id"}} (a payload path)',
            where=where,
        )
    ]


def topic_problems(index: int, entry: Any) -> list[str]:
    """The problems of one entry of ``topics``, each naming its setting."""
    where = f"topics[{index}]"
    if not isinstance(entry, Mapping):
        return [Msg("{where}: give an object with topic and fields", where=where)]
    problems: list[str] = [
        Msg("{where}.{key}: unknown setting (known: topic, fields, device)", where=where, key=key)
        for key in sorted(set(entry) - _TOPIC_KEYS, key=str)
    ]
    found, named = _pattern_problems(where, entry.get("topic"))
    problems += found
    problems += [
        Msg("{where}.topic: the level name {name} is reserved", where=where, name=name)
        for name in sorted(set(named) & (RESERVED - {DEVICE}))
    ]
    fields = entry.get("fields")
    if not isinstance(fields, Mapping) or not fields:
        problems.append(
            Msg(
                "{where}.fields: map each payload path to a field name, such as "
                '{{"$.spindle.temp": "spindle_temp"}}',
                where=where,
            )
        )
        fields = {}
    names: set[str] = set()
    for path, name in fields.items():
        if not isinstance(path, str) or parse_path(path) is None:
            problems.append(
                Msg(
                    "{where}.fields: a payload path is $ or $.key.key (or key.key); "
                    "list items by number: $.axes.0",
                    where=where,
                )
            )
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(
                Msg("{where}.fields: a field name is letters, digits and _", where=where)
            )
        elif name in RESERVED or name in named or name in names:
            problems.append(
                Msg(
                    "{where}.fields: the field name {name} is reserved or given twice",
                    where=where,
                    name=name,
                )
            )
        else:
            names.add(name)
    problems += _device_problems(where, entry.get("device"), named)
    return problems


def pattern(index: int, entry: Mapping[str, Any]) -> Pattern:
    """The pattern of a checked entry of ``topics``."""
    levels = entry["topic"].split("/")
    named = {level[1:]: i for i, level in enumerate(levels) if level.startswith("+") and level[1:]}
    subscription = "/".join("+" if level.startswith("+") else level for level in levels)
    device_level: int | None = named.get(DEVICE)
    device_path: Path | None = None
    device = entry.get("device")
    if isinstance(device, Mapping) and "level" in device:
        level = device["level"]
        device_level = named[level] if isinstance(level, str) else int(level)
    elif isinstance(device, Mapping) and "path" in device:
        device_level, device_path = None, parse_path(device["path"])
    fields = tuple(
        (path, name)
        for path, name in ((parse_path(p), n) for p, n in entry["fields"].items())
        if path is not None
    )
    return Pattern(
        index=index,
        subscription=subscription,
        subscription_levels=tuple(subscription.split("/")),
        levels=tuple((name, level) for name, level in named.items()),
        fields=fields,
        device_level=device_level,
        device_path=device_path,
    )
