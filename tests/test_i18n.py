"""The catalogs: every message a reader can see has a Chinese translation."""

from __future__ import annotations

import pickle

from i18n import Msg
from i18n.catalog import from_environment, negotiate, normalize, translate
from i18n.check import fields, messages, problems


def test_every_marked_message_is_translated() -> None:
    missing = problems("zh-CN")
    listing = "\n".join(f"{m.where}: {what}: {m.text!r}" for m, what in missing[:60])
    assert not missing, (
        f"{len(missing)} messages lack a zh-CN translation (run `python -m i18n.check` for "
        f".po entries to fill in):\n{listing}"
    )


def test_the_extraction_finds_messages_in_python_and_templates() -> None:
    where = {m.where.split(":")[0].rsplit(".", 1)[-1] for m in messages()}
    assert "py" in where


def test_a_message_is_english_text_and_keeps_its_template() -> None:
    message = Msg("unknown column {column}", column="temp")
    assert message == "unknown column temp"
    assert message.template == "unknown column {column}"
    assert pickle.loads(pickle.dumps(message)).params  # noqa: S301 - our own bytes == {"column": "temp"}


def test_an_untranslated_message_stays_english() -> None:
    assert translate(Msg("no such message {n} here", n=3), "zh-CN") == "no such message 3 here"


def test_placeholders_are_compared() -> None:
    assert fields("{a} and {b!r} {c:>3}") == {"a", "b", "c"}


def test_languages_are_negotiated() -> None:
    assert negotiate("zh-CN,zh;q=0.9,en;q=0.8") == "zh-CN"
    assert negotiate("en-US,en;q=0.9,zh;q=0.8") == "en"
    assert negotiate("fr-FR, zh-TW;q=0.5") == "zh-CN"
    assert negotiate("fr") == "en"
    assert negotiate(None) == "en"
    assert negotiate("zh;q=0, en") == "en"
    assert normalize("zh_CN.UTF-8") == "zh-CN"
    assert from_environment({"LANG": "zh_CN.UTF-8"}) == "zh-CN"
    assert from_environment({"LANG": "C.UTF-8"}) == "en"
    assert from_environment({"VEIL_LANG": "en", "LANG": "zh_CN.UTF-8"}) == "en"


def test_a_message_has_one_translation_across_the_catalog_files() -> None:
    """Every .po file of a language is merged, the last one winning: two files that translate
    one message differently would make the wording depend on file names."""
    from babel.messages.pofile import read_po

    from i18n.catalog import LOCALE_DIR

    first: dict[str, tuple[str, object]] = {}
    clashes = []
    for path in sorted((LOCALE_DIR / "zh_CN" / "LC_MESSAGES").glob("*.po")):
        with path.open("rb") as handle:
            for message in read_po(handle):
                if not message.id:
                    continue
                if message.id in first and first[message.id][1] != message.string:
                    clashes.append(f"{message.id!r}: {first[message.id][0]} and {path.name}")
                first.setdefault(message.id, (path.name, message.string))
    assert not clashes, "translated differently in two files:\n" + "\n".join(clashes)
