# ruff: noqa: RUF001 - the Chinese messages use full-width punctuation
"""Validation sentences and stored-message translation, without a server."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from i18n import Msg
from i18n.catalog import translate, use
from sandbox.api.messages import recognise, translate_stored
from sandbox.api.validation import expected, field_name, problems


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget: float = Field(ge=0)
    name: str = Field(max_length=3)
    kind: str = Field(pattern="^[a-z]+$")
    items: list[int] = Field(max_length=2)


def errors(**values: Any) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"budget": 1, "name": "ab", "kind": "x", "items": []}
    with pytest.raises(ValidationError) as caught:
        Body.model_validate(base | values)
    return [dict(e) for e in caught.value.errors()]


@pytest.mark.parametrize(
    ("values", "english", "chinese"),
    [
        ({"budget": -1}, "budget: must be at least 0", "budget：不能小于 0"),
        ({"budget": "lots"}, "budget: must be a number", "budget：必须是数字"),
        ({"name": "toolong"}, "name: must have at most 3 characters", "name：最多 3 个字符"),
        ({"items": [1, 2, 3]}, "items: must have at most 2 items", "items：最多 2 项"),
        ({"items": ["x"]}, "items[0]: must be a whole number", "items[0]：必须是整数"),
        ({"extra": 1}, "extra: is not a field of this request: remove it", None),
        ({"kind": "UPPER"}, "kind: does not have the expected form", None),
    ],
)
def test_pydantic_problems_become_sentences(
    values: dict[str, Any], english: str, chinese: str | None
) -> None:
    found = errors(**values)
    assert problems(found)[0]["message"] == english
    with use("zh-CN"):
        translated = problems(found)[0]["message"]
    if chinese is not None:
        assert translated == chinese
    planted = [str(v) for v in values.values()]
    for message in (english, translated):
        assert not any(p in message for p in planted if len(p) > 2), message


def test_a_missing_field_and_unknown_types() -> None:
    missing = [{"type": "missing", "loc": ("body", "epsilon"), "msg": "Field required"}]
    assert problems(missing)[0]["message"] == "epsilon: is required"
    odd = {"type": "some_new_type", "loc": ("query", "x"), "msg": "quoting the input: 42"}
    assert expected(odd).startswith("has a value this field does not accept")
    # A validator's own Msg is shown; any other ValueError text may quote the input.
    ours = {"type": "value_error", "loc": ("body",), "ctx": {"error": ValueError(Msg("no"))}}
    theirs = {"type": "value_error", "loc": ("body",), "ctx": {"error": ValueError("bad 42")}}
    assert expected(ours) == "no"
    assert "42" not in expected(theirs)
    assert field_name(("body",)) == "body"


def test_stored_english_is_recognised_and_translated() -> None:
    with use("zh-CN"):
        assert translate_stored("column 'x' is not in your grant") == "列“x”不在你的授权范围内"
        assert translate_stored("your grant was revoked") == "你的授权已被撤销"
        stored = (
            "budget short: this job needs epsilon 2 and delta 0; "
            "the grant has epsilon 1 and delta 0 left"
        )
        assert translate_stored(stored).startswith("预算不足：此作业需要 epsilon 2")
        # Not a message of Veil's: unchanged, never half-translated by a generic template.
        assert translate_stored("temperature: 40 degrees") == "temperature: 40 degrees"
    assert translate_stored("your grant was revoked") == "your grant was revoked"
    message = recognise("column 'x' is not in your grant", "zh-CN")
    assert isinstance(message, Msg) and message.params == {"column": "x"}
    assert translate(message, "zh-CN") == "列“x”不在你的授权范围内"
