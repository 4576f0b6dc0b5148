"""A CSV upload's text encoding: UTF-8 (with or without BOM), UTF-16 with a BOM, or the
GB18030 family (GBK, GB2312) that Chinese Excel and MES exports write, detected or named.

Everything after this step reads UTF-8, so another encoding is transcoded in memory, in
chunks.  Detection never guesses: UTF-8 if the bytes decode as UTF-8; UTF-16 if they start
with its BOM; GB18030 if they decode as GB18030 *and* read as Chinese text (most characters
outside ASCII are common hanzi or CJK punctuation, which a Latin-1 or Windows-1252 file that
happens to decode does not); otherwise the uploader is asked to name the encoding.

Privacy rule: no message quotes the file's bytes or says where a bad byte sits.
"""

from __future__ import annotations

import codecs
import csv
import io
from typing import Final

from i18n import Msg
from sandbox.ingest.schema import IngestError, Problem, fail

#: The encodings an uploader may name (``--encoding``, the API's ``encoding`` parameter),
#: by the names Python's codecs know; ``auto`` (or nothing) detects.
ENCODINGS: Final = ("auto", "utf-8", "utf-8-sig", "gb18030", "gbk", "gb2312", "utf-16", "big5")
_CHUNK: Final = 1 << 20
_SAMPLE_CHARS: Final = 20_000  # non-ASCII characters looked at to tell GB18030 text
#: A GB18030 reading is taken when at least this share of its first non-ASCII characters are
#: GB2312 characters (the 6,763 common hanzi and CJK punctuation and full-width forms).
_CJK_SHARE: Final = 0.9
_HOW: Final = Msg(
    "save the CSV as UTF-8, or name its encoding: --encoding gb18030 (veil datasets upload), "
    "the encoding parameter of the API, or the console's encoding field"
)


def known_encoding(name: str | None) -> str | None:
    """The codec name of an encoding an uploader named; None for ``auto`` or nothing."""
    if name is None or not name.strip() or name.strip().lower() == "auto":
        return None
    try:
        codec = codecs.lookup(name.strip()).name
    except LookupError:
        codec = ""
    allowed = {codecs.lookup(e).name for e in ENCODINGS[1:]}
    if codec not in allowed:
        raise fail(Msg("an encoding among {choices}", choices=", ".join(ENCODINGS)))
    return codec


def charset(content_type: str | None) -> str | None:
    """The ``charset`` a content type names (``text/csv; charset=gbk``), else None."""
    for part in (content_type or "").split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset" and value.strip(' "'):
            return value.strip(' "')
    return None


def detect_encoding(data: bytes) -> str:
    """The encoding of a CSV file's bytes, or ``IngestError`` asking to name it."""
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # not one Veil reads
        raise _undetermined()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if _decodes(data, "utf-8"):
        return "utf-8"
    if _decodes(data, "gb18030") and _reads_as_chinese(data):
        return "gb18030"
    raise _undetermined()


def _undetermined() -> IngestError:
    return fail(
        Msg(
            "UTF-8 text, or an encoding Veil can tell (this file is neither UTF-8 nor GB18030 "
            "Chinese text): {how}",
            how=_HOW,
        )
    )


def _not_decodable(codec: str, named: bool) -> IngestError:
    if not named:  # a BOM said UTF-16, but the text is not: the encoding is unknown
        return _undetermined()
    return fail(Msg("{encoding} text (the encoding named for this file)", encoding=codec))


def to_utf8(data: bytes, encoding: str | None = None) -> bytes:
    """``data`` as UTF-8 without BOM (as is when it already is); ``encoding`` None detects."""
    codec = known_encoding(encoding) or detect_encoding(data)
    if codec in ("utf-8", "utf-8-sig") and (encoding is None or _decodes(data, "utf-8")):
        return data  # as is, not copied (the CSV reader skips a BOM)
    out = bytearray()
    decoder = codecs.getincrementaldecoder(codec)()
    view = memoryview(data)
    try:
        for start in range(0, len(view) + 1, _CHUNK):
            text = decoder.decode(view[start : start + _CHUNK], final=start + _CHUNK > len(view))
            out += text.encode("utf-8")
    except UnicodeDecodeError:
        failure = _not_decodable(codec, encoding is not None)
    else:
        if encoding is None and b"\x00" in out:  # text has no NUL: the guess was wrong
            failure = _undetermined()
        else:
            return bytes(out)
    raise failure  # outside the handler: the decoder's message names the offending byte


def to_text(data: bytes, encoding: str | None = None, *, partial: bool = False) -> str:
    """``data`` decoded (detected unless named); ``partial``: the start of a larger file,
    whose last line may be cut, is kept only up to its last full line."""
    if not partial:
        return to_utf8(data, encoding).decode("utf-8-sig")
    if known_encoding(encoding) == "utf-16" or (
        encoding is None and data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    ):
        # UTF-16's newline is two bytes: decode what is whole, then cut the text.
        text = _guarded_decode(data, "utf-16", named=encoding is not None)
        return text[: text.rfind("\n") + 1]
    # In UTF-8 and GB18030 the byte 0A is only ever a newline, so the bytes can be cut.
    return to_utf8(data[: data.rfind(b"\n") + 1], encoding).decode("utf-8-sig")


def _guarded_decode(data: bytes, codec: str, *, named: bool) -> str:
    try:
        return codecs.getincrementaldecoder(codec)().decode(data, final=False)
    except UnicodeDecodeError:
        failure = _not_decodable(codec, named)
    raise failure


def _decodes(data: bytes, codec: str) -> bool:
    decoder = codecs.getincrementaldecoder(codec)()
    view = memoryview(data)
    try:
        for start in range(0, len(view) + 1, _CHUNK):
            decoder.decode(view[start : start + _CHUNK], final=start + _CHUNK > len(view))
    except UnicodeDecodeError:
        return False
    return True


def _reads_as_chinese(data: bytes) -> bool:
    """Whether the first ``_SAMPLE_CHARS`` non-ASCII characters (wherever they are: a file
    may be ASCII for its first megabytes) are mostly GB2312 characters."""
    decoder = codecs.getincrementaldecoder("gb18030")(errors="ignore")
    view = memoryview(data)
    wide = common = 0
    for start in range(0, len(view), _CHUNK):
        for char in decoder.decode(view[start : start + _CHUNK]):
            if ord(char) > 0x7F:
                wide += 1
                common += _in_gb2312(char)
        if wide >= _SAMPLE_CHARS:
            break
    return wide > 0 and common >= _CJK_SHARE * wide


def _in_gb2312(char: str) -> bool:
    try:
        char.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


# --- Records -------------------------------------------------------------------------
#
# The CSV reader of the fast pass fills a record with too few fields with empty values, and
# rejects one with too many without saying where.  This pass reads the records with
# Python's csv module (strict quoting) and names the row of each malformed one; it runs on
# every CSV with a nullable column (where a short record would be taken for empty values)
# and before the exact pass reports anything.


def record_problems(data: bytes, width: int, max_problems: int) -> tuple[list[Problem], int]:
    """The malformed records of a UTF-8 CSV (header first), at most ``max_problems`` of
    them, and how many there are in all; rows are 1-based data rows, as everywhere."""
    lines = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    reader = csv.reader(lines, strict=True)
    problems: list[Problem] = []
    total = row = 0
    try:
        next(reader, None)  # the header, checked by the caller
        for row, record in enumerate(reader, start=1):
            if record and len(record) != width:
                total += 1
                if len(problems) < max_problems:
                    found = Msg("{width} fields, found {count}", width=width, count=len(record))
                    problems.append(Problem(None, row, found))
    except csv.Error:  # its text quotes the data: say what is wrong, and where
        total += 1
        if len(problems) < max(max_problems, 1):
            problems.append(Problem(None, row + 1, _BAD_QUOTES))
    return problems, total


_BAD_QUOTES: Final = Msg(
    'a well-formed quoted field: a field that starts with " ends with " before the next '
    'comma or line, and a " inside it is written ""'
)
