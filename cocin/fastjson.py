"""JSON for cocin's records, without ``json``'s import cost.

``import json`` takes ~7 ms, most of it not JSON at all: ``json`` imports
``re`` (for a few patterns of its pure-Python fallback), and ``re`` imports
``enum``. Every ``cocin`` command reads or writes JSON records, and ``run``
has a start-up budget of a few tens of milliseconds. The parser and the
encoder that ``json.loads``/``json.dumps`` use anyway are in the C module
``_json``; this module calls them directly. Output is compact (one line): the
C encoder has no indentation before Python 3.13, and ``cocin inspect``
pretty-prints for people.

Malformed input raises ``ValueError`` (as ``json.JSONDecodeError`` does).
"""

from __future__ import annotations

# Names for annotations only (see tests/unit/test_import_budget.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:
    from _json import encode_basestring_ascii, make_encoder, make_scanner
except ImportError:  # an interpreter without the C accelerator: plain json
    import json

    def loads(text: str | bytes) -> Any:
        return json.loads(text)

    def dumps(obj: object) -> str:
        return json.dumps(obj)

else:

    class _Options:
        """What the C scanner reads from its "context" (a JSONDecoder, normally)."""

        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = float  # NaN, Infinity, -Infinity

    _scan = make_scanner(_Options())  # type: ignore[arg-type]  # duck-typed: what it reads

    def _unsupported(obj: object) -> object:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    _SPACE = " \t\n\r"

    def loads(text: str | bytes) -> Any:
        """Parse one JSON document (surrounding whitespace allowed)."""
        if isinstance(text, bytes):
            text = text.decode()
        start = len(text) - len(text.lstrip(_SPACE))
        try:
            obj, end = _scan(text, start)
        except StopIteration as e:
            raise ValueError(f"invalid JSON at offset {e.value}") from None
        if text[end:].strip(_SPACE):
            raise ValueError(f"invalid JSON: extra data at offset {end}")
        return obj

    def dumps(obj: object) -> str:
        """``obj`` (dicts, lists, strings, numbers, booleans, None) as JSON text."""
        encode = make_encoder(
            {},  # markers: detects a list or dict that contains itself
            _unsupported,
            encode_basestring_ascii,
            None,  # default, string encoder, indent
            ": ",
            ", ",
            False,
            False,
            True,
        )  # separators, sort_keys, skipkeys, allow_nan
        return "".join(encode(obj, 0))
