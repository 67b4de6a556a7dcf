"""JSON as batch schedulers print it, read member by member without losing one.

``qstat -f -F json`` is not always JSON: PBS prints values that look numeric without quotes (``"select":40`` is
valid JSON, ``"X":0000123``, ``"FOO":.5`` and ``"n":1:ncpus=64`` are not), keeps stray backslashes (``\\'``,
``\\,``), control characters and, at times, unescaped quotes inside strings. :func:`members` reads the object or
array under one key of such a document: a member that strict JSON refuses is read again leniently (a bare token is
a number when it is a JSON number, else its text; an unknown escape is its character; a quote ends a string only
before ``,``, ``:``, the end, or a closing bracket followed by one of those), and a member that cannot be read even
so is reported as :class:`Unread`, with its name, and reading goes on at the next member of the same indentation.
Output without the object or array, or in which it never closes (cut short), is reported as an Unread that is
``cut``: records may be lost in it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_CLIP = 200  # characters of unreadable output kept in a message
_STRICT = json.JSONDecoder(strict=False)  # raw control characters inside strings are what PBS prints
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_BARE = re.compile(r"[^,}\]\n]*")
_PLAIN = re.compile(r'[^"\\]*')
# what follows the quote that ends a string: a separator, a closing bracket that is itself followed by one, the end
_CLOSER = re.compile(r"\s*(?:[,:]|[}\]]\s*(?:[,}\]]|$)|$)")
_UNICODE = re.compile(r"u([0-9a-fA-F]{4})(?:\\u([0-9a-fA-F]{4}))?")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_WORDS = {"true": True, "false": False, "null": None}


@dataclass(frozen=True)
class Unread:
    """A record that could not be read: its name (None when even that is unknown), why, and its raw text; ``cut``
    when the output ends, or cannot be followed, before the record does: any record may be lost in it."""

    name: str | None
    reason: str
    text: str = ""
    cut: bool = False

    def __str__(self) -> str:
        shown = clip(self.text.strip())
        return f"{self.name or 'a record'}: {self.reason}" + (f": {shown!r}" if shown else "")

    def may_hold(self, words: str) -> bool:
        """Whether this may be a record in which ``words`` (a job name) are printed: they are in its text, or it is
        cut."""
        return self.cut or words in self.text


Member = tuple[str | None, Any]


def members(text: str, key: str) -> tuple[list[Member], list[Unread]]:
    """The members of the object or array under ``key`` (name, value; the name None for array items), and those that
    could not be read. No ``key`` in a JSON document means no members. No ``key`` in anything else (nothing at all
    included), or a ``key`` whose object or array never closes, is one more Unread that is ``cut``."""
    try:
        document = _STRICT.decode(text)
    except (ValueError, RecursionError):
        return _member_by_member(text, key)
    container = document.get(key) if isinstance(document, dict) else None
    if isinstance(container, dict):
        return list(container.items()), []
    if isinstance(container, list):
        return [(None, value) for value in container], []
    if container is None and isinstance(document, dict):  # no jobs: the key is left out
        return [], []
    return [], [Unread(None, f"no {key!r} in the output", text, cut=True)]


def _member_by_member(text: str, key: str) -> tuple[list[Member], list[Unread]]:
    opening = re.search(rf'"{re.escape(key)}"\s*:\s*([{{\[])', text)
    if opening is None:
        return [], [Unread(None, f"no {key!r} in the output", text, cut=True)]
    named, pos = opening[1] == "{", opening.end()
    found: list[Member] = []
    unread: list[Unread] = []
    while True:
        pos = _skip(text, pos, " \t\r\n,")
        if pos == len(text):  # cut short, or a member that could not be read hides the end
            return found, [*unread, Unread(None, f"the output ends inside {key!r}", cut=True)]
        if text[pos] in "]}":
            return found, unread
        start, name = pos, None
        try:
            if named:
                name, pos = _Lenient(text).string(pos)
                pos = _expect(text, pos, ":")
            value, pos = _value(text, pos)
            found.append((name, value))
        except _Error as exc:
            resume = _next_sibling(text, start, named)
            unread.append(Unread(name, exc.reason, text[start:resume]))
            pos = resume


def _value(text: str, pos: int) -> tuple[Any, int]:
    """The JSON value at ``pos``: strict JSON when it is that, else read leniently."""
    try:
        value, end = _STRICT.raw_decode(text, pos)
    except (ValueError, RecursionError):
        return _Lenient(text).value(pos)
    after = _skip(text, end, " \t\r\n")
    if after < len(text) and text[after] not in ",}]":  # only a prefix was JSON: 0 of 005
        return _Lenient(text).value(pos)
    return value, end


def _next_sibling(text: str, start: int, named: bool) -> int:
    """Where the member after the one at ``start`` begins: the next line indented as that member's line and starting
    as a member does. The end of the text if there is none (or the member does not begin its own line)."""
    line = text.rfind("\n", 0, start) + 1
    indent = text[line:start]
    if indent.strip():
        return len(text)
    opener = '"' if named else "{"
    sibling = re.compile(rf"\n{re.escape(indent)}{re.escape(opener)}")
    match = sibling.search(text, start)
    return match.start() + 1 if match else len(text)


class _Error(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Lenient:
    """A reader of one value as PBS prints it; raises _Error where even that cannot be read."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.depth = 0

    def value(self, pos: int) -> tuple[Any, int]:
        pos = _skip(self.text, pos, " \t\r\n")
        if pos == len(self.text):
            raise _Error("the output ends inside it")
        char = self.text[pos]
        if char in "{[":
            self.depth += 1
            if self.depth > 100:
                raise _Error("nested too deep")
            result = self.container(pos + 1, char == "{")
            self.depth -= 1
            return result
        if char == '"':
            return self.string(pos)
        return self.bare(pos)

    def container(self, pos: int, named: bool) -> tuple[Any, int]:
        items: dict[str, Any] = {}
        values: list[Any] = []
        closing = "}" if named else "]"
        while True:
            pos = _skip(self.text, pos, " \t\r\n,")
            if pos == len(self.text):
                raise _Error("the output ends inside it")
            if self.text[pos] == closing:
                return (items if named else values), pos + 1
            if named:
                name, pos = self.string(pos)
                items[name], pos = self.value(_expect(self.text, pos, ":"))
            else:
                value, pos = self.value(pos)
                values.append(value)
            pos = _skip(self.text, pos, " \t\r\n")
            if pos < len(self.text) and self.text[pos] not in "," + closing:
                raise _Error(f"unexpected {self.text[pos]!r} after a value")

    def string(self, pos: int) -> tuple[str, int]:
        if pos >= len(self.text) or self.text[pos] != '"':
            raise _Error("expected a quoted name")
        parts: list[str] = []
        pos += 1
        while True:
            plain = _PLAIN.match(self.text, pos)
            assert plain is not None  # the pattern matches the empty string
            parts.append(plain[0])
            pos = plain.end()
            if pos >= len(self.text):
                raise _Error("the output ends inside a string")
            if self.text[pos] == "\\":
                char, pos = self.escape(pos + 1)
                parts.append(char)
                continue
            if _CLOSER.match(self.text, pos + 1):
                return "".join(parts), pos + 1
            parts.append('"')  # a quote PBS did not escape
            pos += 1

    def escape(self, pos: int) -> tuple[str, int]:
        """The character an escape stands for; an escape JSON does not know stands for its character."""
        if pos >= len(self.text):
            raise _Error("the output ends inside a string")
        char = self.text[pos]
        unicode = _UNICODE.match(self.text, pos)
        if unicode is None:
            return _ESCAPES.get(char, char), pos + 1
        code = int(unicode[1], 16)
        if unicode[2] and 0xD800 <= code < 0xDC00 <= int(unicode[2], 16) < 0xE000:  # a surrogate pair
            return chr(0x10000 + ((code - 0xD800) << 10) + int(unicode[2], 16) - 0xDC00), unicode.end()
        return chr(code), unicode.start() + 5

    def bare(self, pos: int) -> tuple[Any, int]:
        """An unquoted value: a JSON number or word as such, anything else (``005``, ``.5``, ``1:ncpus=64``) as
        its text."""
        match = _BARE.match(self.text, pos)
        assert match is not None  # the pattern matches the empty string
        token = match[0].strip()
        if not token:
            raise _Error(f"expected a value, found {self.text[pos : pos + 1]!r}")
        if token in _WORDS:
            return _WORDS[token], match.end()
        if _NUMBER.fullmatch(token):
            return json.loads(token), match.end()
        return token, match.end()


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _expect(text: str, pos: int, char: str) -> int:
    pos = _skip(text, pos, " \t\r\n")
    if pos >= len(text) or text[pos] != char:
        found = repr(text[pos]) if pos < len(text) else "the end of the output"
        raise _Error(f"expected {char!r}, found {found}")
    return pos + 1


def clip(text: str) -> str:
    """``text``, shortened for a message."""
    return text if len(text) <= _CLIP else text[:_CLIP] + "..."
