"""Strict, bounded JSON for request bodies: UTF-8 only, no key twice in an object, and a large
KServe v2 infer body decoded without a Python object per tensor element.

Small bodies (the hot path) go through the stdlib's C parser as they always have. A body of
`SMALL_BODY` bytes or more is parsed here: its skeleton (objects, strings, short arrays)
becomes Python objects as usual, but an array of numbers (or true/false/null/NaN/Infinity,
or the "NaN"/"Infinity"/"-Infinity" texts), flat or nested, of `MIN_BLOCK` bytes or more
stays in the body as a `NumberArray`, and a flat array of text in inputs[i].data as a
`StringArray`: `json_arrays` finds them, checks them and converts them a piece at a time.
Everything else is counted and bounded here: at most one Python value per `BYTES_PER_VALUE`
bytes of body, at most `MAX_TENSORS` inputs or outputs, at least `BYTES_PER_STRING` body
bytes per text element. Peak memory beyond the body is the result array plus a few pieces,
whatever the body holds."""

from __future__ import annotations

import codecs as text_codecs
import json
import json.scanner
import math
import re
from json.decoder import scanstring

import numpy as np

from zooserve.protocol.errors import invalid_argument
from zooserve.serving.http_frontend import json_arrays
from zooserve.serving.http_frontend.json_arrays import (
    JSON_STRING,
    NumberArray,
    StringArray,
    finite_or_refused,
    number_array,
)

__all__ = ["MAX_TENSORS", "MIN_BLOCK", "SMALL_BODY", "NumberArray", "StringArray", "loads"]

SMALL_BODY = 64 * 1024  # below this, stdlib json on the whole body (at most ~25x of 64 KiB)
MIN_BLOCK = 1024  # shorter arrays become lists, as stdlib json makes them
WINDOWS = (2048, 64 * 1024)  # a value that ends within one is left to the C parser
# A large body's Python objects outside arrays of numbers and text (each ~50-200 bytes:
# dicts, lists, short strings) are counted, one per this many bytes of body allowed: so
# they stay within ~4x the body. Real requests have a few dozen, whatever their size.
BYTES_PER_VALUE = 32
# No model has more than a handful of inputs or outputs, and a name may come only once:
# 1024 is generous, and stops a body of many tiny tensors before its dicts are made.
MAX_TENSORS = 1024
# inputs[i].data of text is converted in pieces, but each element still ends as a bytes
# object (~33 bytes plus its text) in an object array: an average element must take this
# many bytes of body (`"abcde",`), so the result stays within ~8x its text.
BYTES_PER_STRING = 8
_WS = re.compile(rb"[ \t\n\r]*")
_NUMBER = re.compile(rb"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_PLAIN_STRING = re.compile(rb'"[^"\\\x00-\x1f]*+"')
_ANY_STRING = re.compile(JSON_STRING, re.DOTALL)
_STRING_ARRAY = re.compile(
    rb"\[[ \t\n\r]*(?:" + JSON_STRING + rb"[ \t\n\r]*(?:,[ \t\n\r]*" + JSON_STRING
    + rb"[ \t\n\r]*)*+)?\]", re.DOTALL)
# What an array of numbers and literals can hold; an array that leaves it is not one.
_RUN = re.compile(rb'[-0-9+.eE,\[\] \t\n\r"truefalsnNIiy]*')
_LITERALS = ((b"null", None), (b"true", True), (b"false", False), (b"NaN", math.nan),
             (b"Infinity", math.inf), (b"-Infinity", -math.inf))


class _TooMany(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_pairs(pairs: list) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return result


# json's own C scanner, as strict as loads: for values that fit in a window.
_SCAN = json.scanner.make_scanner(json.JSONDecoder(parse_float=finite_or_refused,
                                                   object_pairs_hook=_unique_pairs))


def _shown(key: str) -> str:
    if len(key) <= 64:
        return json.dumps(key)
    return f"{json.dumps(key[:64])}... ({len(key)} characters)"


def loads(raw: bytes | bytearray | memoryview, what: str, hint: str = "",
          small: int = SMALL_BODY) -> object:
    """A JSON body (or part of one), strictly: UTF-8 (a UTF-8 byte order mark is skipped),
    no key twice in an object, numbers a 64-bit float or Python can hold. Anything else is
    the client's mistake, also nesting too deep to read."""
    data = bytes(raw) if isinstance(raw, memoryview) else raw
    try:
        start = _utf8_start(data, what, hint)
        if len(data) < small:
            text = data[start:].decode() if start else data.decode()
            return json.loads(text, parse_float=finite_or_refused,
                              object_pairs_hook=_unique_pairs)
        return _Parser(data, start, what, hint).document()
    except json.JSONDecodeError as exc:
        raise invalid_argument(f"{what} is not JSON: {exc}{hint}") from None
    except _Duplicate as exc:
        raise invalid_argument(f"{what} has the key {_shown(exc.key)} twice{hint}") from None
    except RecursionError:
        raise invalid_argument(f"{what} is nested too deeply to read") from None
    except _TooMany as exc:
        raise invalid_argument(f"{what} {exc.message}{hint}") from None
    except ValueError as exc:  # int digits beyond Python's limit; finite_or_refused
        raise invalid_argument(f"{what} holds a number that cannot be read: {exc}") from None


def _utf8_start(data: bytes | bytearray, what: str, hint: str) -> int:
    """Where the JSON starts (after a UTF-8 byte order mark); UTF-16/32 and bytes that are
    not UTF-8 refused, without holding a decoded copy of a large body."""
    nul = data.find(b"\x00")
    if nul >= 0 or data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise invalid_argument(
            f"{what} is not JSON: it must be UTF-8 JSON, and this looks like UTF-16 or UTF-32 "
            f"(byte {max(nul, 0)} is {'NUL' if nul >= 0 else 'a UTF-16 byte order mark'}){hint}")
    if not data.isascii():
        decoder = text_codecs.getincrementaldecoder("utf-8")()
        piece = json_arrays.PIECE
        for at in range(0, len(data), piece):
            try:
                decoder.decode(data[at:at + piece], at + piece >= len(data))
            except UnicodeDecodeError as exc:
                where = at + exc.start - len(decoder.getstate()[0]) * (exc.start == 0)
                raise invalid_argument(
                    f"{what} is not JSON: it must be UTF-8 JSON, and byte {where} "
                    f"(0x{data[where]:02x}) is not UTF-8{hint}") from None
    return 3 if data.startswith(b"\xef\xbb\xbf") else 0


class _Parser:
    """The skeleton of a large document, with arrays of numbers left in place."""

    def __init__(self, data: bytes | bytearray, start: int, what: str, hint: str) -> None:
        self.data, self.start, self.what, self.hint = data, start, what, hint
        self.path: list[object] = []  # keys and indices down to the value being read
        self.values = 0  # Python objects made so far, at most `budget`
        self.budget = max(len(data), SMALL_BODY) // BYTES_PER_VALUE

    def made(self, count: int) -> None:
        self.values += count
        if self.values > self.budget:
            raise _TooMany(
                f"holds more than {self.budget} JSON values besides arrays of numbers and "
                f"tensor data of text (one per {BYTES_PER_VALUE} bytes of a large body, so its "
                "memory is bounded); give tensor data as flat arrays")

    def error(self, reason: str, at: int) -> json.JSONDecodeError:
        """json's own error, positions counted in characters as json counts them."""
        data, base = self.data, self.start
        line_start = data.rfind(b"\n", base, at) + 1 or base
        chars, column = self.chars(base, at), self.chars(line_start, at) + 1
        line = data.count(b"\n", base, at) + 1
        error = json.JSONDecodeError(reason, "", 0)
        error.args = (f"{reason}: line {line} column {column} (char {chars})",)
        return error

    def chars(self, start: int, end: int) -> int:
        """Characters in data[start:end]: UTF-8 continuation bytes are not characters."""
        if self.data.isascii():
            return end - start
        view = np.frombuffer(self.data, np.uint8, count=end - start, offset=start)
        return end - start - int(np.count_nonzero((view & 0xC0) == 0x80))

    def ws(self, at: int) -> int:
        return _WS.match(self.data, at).end()

    def document(self) -> object:
        value, end = self.value(self.ws(self.start))
        end = self.ws(end)
        if end != len(self.data):
            raise self.error("Extra data", end)
        return value

    def value(self, at: int) -> tuple[object, int]:
        data = self.data
        char = data[at:at + 1]
        if char == b'"':
            return self.string(at)
        if char in (b"{", b"["):
            small = self.in_window(at)
            if small is not None:
                return small
            return self.object(at) if char == b"{" else self.array(at)
        for word, value in _LITERALS:
            if data.startswith(word, at):
                return value, at + len(word)
        match = _NUMBER.match(data, at)
        if match is None:
            raise self.error("Expecting value", at)
        whole, fraction, exponent = match.groups()
        if fraction or exponent:
            return finite_or_refused(match.group().decode()), match.end()
        return int(whole), match.end()

    def in_window(self, at: int) -> tuple[object, int] | None:
        """The value at `at` by the C parser when it ends within a window of the body (so
        its Python objects are few), else None."""
        for size in WINDOWS:
            window = self.data[at:at + size]
            text, _ = text_codecs.utf_8_decode(window, "strict", False)
            try:
                value, end = _SCAN(text, 0)
            except (json.JSONDecodeError, StopIteration):
                if len(window) < size:
                    return None  # the rest of the body: the slow path says what is wrong
                continue
            stop = at + (end if window.isascii() else len(text[:end].encode()))
            # At most one value per comma or opening bracket (commas in text count too).
            self.made(1 + sum(self.data.count(c, at, stop) for c in (b",", b"[", b"{")))
            self.tensors(value)
            return value, stop
        return None

    def tensors(self, value: object) -> None:
        """Refuse a request's "inputs" or "outputs" list of more than MAX_TENSORS."""
        path = self.path
        if (len(path) == 1 and path[0] in ("inputs", "outputs") and isinstance(value, list)
                and len(value) > MAX_TENSORS):
            raise _TooMany(f"has more than {MAX_TENSORS} tensors in {json.dumps(path[0])}; "
                           "no model has that many")

    def string(self, at: int) -> tuple[str, int]:
        match = _PLAIN_STRING.match(self.data, at)
        if match:
            return self.data[at + 1:match.end() - 1].decode(), match.end()
        match = _ANY_STRING.match(self.data, at)
        if match is None:
            raise self.error("Unterminated string starting at", at)
        text = self.data[at:match.end()].decode()
        try:
            return scanstring(text, 1, True)[0], match.end()
        except json.JSONDecodeError as exc:
            raise self.error(exc.msg, at + len(text[:exc.pos].encode())) from None

    def object(self, at: int) -> tuple[dict, int]:
        data, result = self.data, {}
        at = self.ws(at + 1)
        if data[at:at + 1] == b"}":
            return result, at + 1
        while True:
            if data[at:at + 1] != b'"':
                raise self.error("Expecting property name enclosed in double quotes", at)
            key, at = self.string(at)
            at = self.ws(at)
            if data[at:at + 1] != b":":
                raise self.error("Expecting ':' delimiter", at)
            self.path.append(key)
            value, at = self.value(self.ws(at + 1))
            self.path.pop()
            if key in result:
                raise _Duplicate(key)
            self.made(1)
            result[key] = value
            at = self.ws(at)
            if data[at:at + 1] == b"}":
                return result, at + 1
            if data[at:at + 1] != b",":
                raise self.error("Expecting ',' delimiter", at)
            at = self.ws(at + 1)

    def array(self, at: int) -> tuple[object, int]:
        data = self.data
        run_end = _RUN.match(data, at).end()
        # inputs[i].data is always converted (or the request refused before): its
        # tokens are checked then, in one pass with the conversion.
        path = self.path
        later = len(path) == 3 and path[0] == "inputs" and path[2] == "data"
        if run_end - at >= MIN_BLOCK:
            block = number_array(self, at, run_end, later)
            if block is not None:
                self.made(1)
                return block, block.end
        strings = _STRING_ARRAY.match(data, at)
        if strings:
            if later and strings.end() - at >= MIN_BLOCK:  # BYTES elements, in pieces later
                block = StringArray(self, at, strings.end())
                if block.count * BYTES_PER_STRING > strings.end() - at:
                    raise _TooMany(
                        f"has {block.count} texts in inputs[{path[1]}].data, more than one per "
                        f"{BYTES_PER_STRING} bytes of it (so its memory is bounded)")
                self.made(1)
                return block, strings.end()
            text = data[at:strings.end()].decode()  # the C parser, as before
            try:
                value = json.loads(text)
                self.made(len(value) + 1)
                return value, strings.end()
            except json.JSONDecodeError as exc:
                raise self.error(exc.msg, at + len(text[:exc.pos].encode())) from None
        result: list = []
        at = self.ws(at + 1)
        if data[at:at + 1] == b"]":
            return result, at + 1
        while True:
            self.path.append(len(result))
            value, at = self.value(at)
            self.path.pop()
            self.made(1)
            result.append(value)
            self.tensors(result)
            at = self.ws(at)
            if data[at:at + 1] == b"]":
                return result, at + 1
            if data[at:at + 1] != b",":
                raise self.error("Expecting ',' delimiter", at)
            at = self.ws(at + 1)

