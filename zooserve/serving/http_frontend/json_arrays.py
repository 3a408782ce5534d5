"""The arrays a large JSON body keeps in place (see `json_tensors`): a `NumberArray` (numbers
and true/false/null/NaN/Infinity, flat or nested) and a `StringArray` (inputs[i].data of text),
each converted into an array of the tensor's datatype when `zooserve.protocol.codecs` asks,
a `PIECE` of the body at a time, with json's own checks and messages.

Finding them is one vectorised pass (`_Scan`): each byte of an array's text classified with
numpy, a `SCAN_CHUNK` at a time, which gives where its brackets balance, the first grammar
mistake, and its shape (or that it is ragged) without a Python object per element. This module
knows the parser that found an array only as a `FoundIn`: the body, and how to report a
mistake at a position as json would."""

from __future__ import annotations

import json
import math
import re
from typing import Protocol

import numpy as np

from zooserve.protocol import codecs
from zooserve.protocol.errors import invalid_argument

PIECE = 64 * 1024  # bytes of an array parsed to Python objects at a time
RAGGED_AS_LIST = 4 << 20  # a ragged array up to this size is read as lists to be refused
MAX_DEPTH = 512  # nesting json's own recursion limit would refuse anyway
SCAN_CHUNK = 64 * 1024  # bytes of an array's text classified by numpy at a time
STRINGS_PER_PIECE = 4096
WS = b" \t\n\r"
JSON_STRING = rb'"(?:[^"\\]++|\\.)*+"'  # a JSON string's text, its escapes not yet checked
_STRING_RUN = re.compile(  # up to STRINGS_PER_PIECE elements of a string array, from one
    rb"[ \t\n\r]*" + JSON_STRING + rb"[ \t\n\r]*(?:,[ \t\n\r]*" + JSON_STRING
    + rb"[ \t\n\r]*){0,%d}" % (STRINGS_PER_PIECE - 1), re.DOTALL)
# What a float past 1.8e308 needs: a three-digit exponent, or 300 digits.
_HUGE_EXPONENT = re.compile(rb"[eE]\+?0*[1-9][0-9]{2}")
_LONG_DIGITS = re.compile(rb"[0-9]{300}")
_BRACKETS_TO_SPACES = bytes.maketrans(b"[]", b"  ")
_EMPTY = re.compile(rb"\[[ \t\n\r]*\]")  # [] in a ragged array: one element, to check the rest

# Byte classes of an array's text, and which item may follow which (JSON's grammar).
_OTHER, _OPEN, _CLOSE, _COMMA, _TOKEN = 0, 1, 2, 3, 4
_CLASS = np.full(256, _TOKEN, dtype=np.uint8)
_CLASS[list(WS)] = _OTHER
_CLASS[ord("[")], _CLASS[ord("]")], _CLASS[ord(",")] = _OPEN, _CLOSE, _COMMA
_FOLLOWS = np.zeros((5, 5), dtype=bool)
for _a, _b in [(_OPEN, _OPEN), (_OPEN, _TOKEN), (_OPEN, _CLOSE), (_TOKEN, _COMMA),
               (_TOKEN, _CLOSE), (_COMMA, _OPEN), (_COMMA, _TOKEN), (_CLOSE, _COMMA),
               (_CLOSE, _CLOSE)]:
    _FOLLOWS[_a, _b] = True


def finite_or_refused(text: str) -> float:
    """A JSON number as a float; one past a 64-bit float's range refused, not infinity."""
    value = float(text)
    if math.isinf(value):  # 1e400: json would read it as infinity, silently
        raise ValueError(f"the number {text[:40]} is out of range for a 64-bit float")
    return value


class FoundIn(Protocol):
    """What an array needs of the parser that found it in the body."""

    data: bytes | bytearray
    what: str  # "the request body", for messages
    hint: str

    def ws(self, at: int) -> int:
        """Where the whitespace at `at` ends."""
        ...

    def error(self, reason: str, at: int) -> json.JSONDecodeError:
        """json's own error for a mistake at byte `at` of the body."""
        ...


class NumberArray(codecs.ElementSource):
    """A JSON array of numbers (and true/false/null/NaN/Infinity) still in the body: where it
    is, its shape (None when ragged) and its nesting depth."""

    def __init__(self, parser: FoundIn, start: int, end: int,
                 dims: tuple[int, ...] | None, depth: int) -> None:
        self.parser, self.data = parser, parser.data
        self.start, self.end, self.dims, self.depth = start, end, dims, depth

    def elements(self, name: str, datatype: str, role: str) -> np.ndarray:
        parser = self.parser
        try:
            return self._elements(name, datatype, role)
        except _PieceError as exc:
            error = parser.error(exc.reason, exc.at)
            raise invalid_argument(f"{parser.what} is not JSON: {error}{parser.hint}") from None
        except ValueError as exc:  # as loads says it
            raise invalid_argument(
                f"{parser.what} holds a number that cannot be read: {exc}") from None

    def _elements(self, name: str, datatype: str, role: str) -> np.ndarray:
        if self.dims is None and self.end - self.start <= RAGGED_AS_LIST:
            # Always refused; as a list, numpy says which element breaks the nesting.
            text = self.data[self.start:self.end].decode()
            return codecs.decode_nested(name, datatype,
                                        json.loads(text, parse_float=finite_or_refused), role)
        empty = self.dims is not None and 0 in self.dims  # [[], []]: brackets only
        values = () if empty else (v for _, v in _pieces(self.data, self.start + 1,
                                                          self.end - 1))
        return codecs.elements_from_pieces(name, datatype, role, self.dims, self.depth, values)


class StringArray(codecs.ElementSource):
    """A flat JSON array of text still in the body (inputs[i].data): its syntax checked and
    its elements counted when parsed, converted a piece at a time when asked."""

    def __init__(self, parser: FoundIn, start: int, end: int) -> None:
        self.parser, self.start, self.end = parser, start, end
        self.count = sum(len(v) for _, v in _string_pieces(parser, start, end))

    def elements(self, name: str, datatype: str, role: str) -> np.ndarray:
        values = (v for _, v in _string_pieces(self.parser, self.start, self.end))
        return codecs.elements_from_pieces(name, datatype, role, (self.count,), 1, values)


def _string_pieces(parser: FoundIn, start: int, end: int):
    """(start, texts) for each run of up to STRINGS_PER_PIECE elements of the string array
    data[start:end], syntax mistakes refused as json refuses them."""
    data, at = parser.data, parser.ws(start + 1)
    while at < end - 1:
        stop = _STRING_RUN.match(data, at).end()
        text = data[at:stop].decode()
        try:
            yield at, json.loads(f"[{text}]")
        except json.JSONDecodeError as exc:
            raise parser.error(exc.msg, at + len(text[:exc.pos - 1].encode())) from None
        at = stop + 1


class _PieceError(Exception):
    def __init__(self, reason: str, at: int) -> None:
        self.reason, self.at = reason, at


def _pieces(data: bytes | bytearray, at: int, end: int, empties: bool = False):
    """(start, values) for each piece of an array's inside, cut at commas, its brackets
    read as spaces: the elements as json reads them, a piece at a time. `empties`: each []
    read as an element (only to check the syntax of a ragged array)."""
    while at < end:
        cut = data.find(b",", min(at + PIECE, end), end)
        cut = end if cut < 0 else cut
        piece = _EMPTY.sub(b"0", data[at:cut]) if empties else data[at:cut]
        text = piece.translate(_BRACKETS_TO_SPACES).decode()
        try:
            # The float hook costs a call per number: only where one could overflow.
            huge = ((b"e" in piece or b"E" in piece) and _HUGE_EXPONENT.search(piece)
                    or _LONG_DIGITS.search(piece))
            hook = finite_or_refused if huge else None
            yield at, json.loads(f"[{text}]", parse_float=hook)
        except json.JSONDecodeError as exc:
            raise _PieceError(exc.msg, at + exc.pos - 1) from None
        at = cut + 1


def number_array(parser: FoundIn, start: int, run_end: int,
                  later: bool = False) -> NumberArray | None:
    """The array at `start` as a NumberArray, or None when it holds anything else (text,
    objects); its syntax mistakes are refused as json would refuse them."""
    data = parser.data
    scan = _Scan(data, start, run_end)
    if scan.end is None or (scan.mistake and scan.quoted):
        return None  # not only numbers: the general path reads it, or says what is wrong
    if scan.max_depth > MAX_DEPTH:
        raise RecursionError
    limit = scan.mistake[1] if scan.mistake else scan.end - 1
    if (scan.tokens == 0 or later and not scan.quoted) and not scan.mistake:
        limit = start  # nothing but brackets, or checked when converted
    try:
        for _, values in _pieces(data, start + 1, limit, empties=True):
            if scan.quoted and any(type(v) is str and v not in codecs.NON_FINITE_TEXT
                                   for v in values):
                return None
    except _PieceError as exc:
        if scan.quoted:
            return None
        raise parser.error(exc.reason, exc.at) from None
    if scan.mistake:
        raise parser.error(*scan.mistake)
    dims = scan.dims()
    if scan.tokens == 0 and dims is not None:  # only empty arrays: [[], []]
        dims = _empty_dims(data[start:scan.end])
    return NumberArray(parser, start, scan.end, dims, scan.max_depth)


def _empty_dims(text: bytes | bytearray) -> tuple[int, ...] | None:
    """The shape of an array of empty arrays: each innermost [] read as one element."""
    stripped = bytes(text).translate(None, WS)
    if stripped == b"[]":
        return (0,)
    virtual = stripped.replace(b"[]", b"0")
    inner = _Scan(virtual, 0, len(virtual)).dims()
    return None if inner is None else (*inner, 0)


class _Scan:
    """One pass over the array at `start`, a chunk at a time: where its brackets balance
    (`end`, None when not within `run_end`: it holds something else), whether it holds a
    quote, the first grammar mistake (reason, position), and what its shape needs: tokens,
    depth, and for each two neighbouring tokens how many brackets close between them."""

    def __init__(self, data: bytes | bytearray, start: int, run_end: int) -> None:
        self.end: int | None = None
        self.quoted = False
        self.mistake: tuple[str, int] | None = None
        self.tokens, self.token_depth, self.max_depth = 0, 0, 0
        self.regular = True
        self.closes: list[np.ndarray] = []
        # The stretch since the last token (or the start): commas, opens, closes, lowest depth.
        self.segment = [0, 0, 0, 0]
        previous, last_byte, depth, at, size = _OTHER, _OTHER, 0, start, min(4096, SCAN_CHUNK)
        # Chunks grow from 4 KiB: a short array costs little however long the run after it.
        while at < run_end and self.end is None and self.mistake is None:
            stop = min(at + size, run_end)
            previous, depth = self._chunk(data, at, stop, previous, last_byte, depth)
            last_byte = int(_CLASS[data[stop - 1]])
            at, size = stop, min(size * 4, SCAN_CHUNK)

    def _chunk(self, data, at: int, stop: int, previous: int, last_byte: int,
               depth: int) -> tuple[int, int]:
        raw = np.frombuffer(data, np.uint8, count=stop - at, offset=at)
        cls = _CLASS[raw]
        starts_token = (cls == _TOKEN) & (np.concatenate(([last_byte], cls[:-1])) != _TOKEN)
        where = np.flatnonzero(((cls != _OTHER) & (cls != _TOKEN)) | starts_token)
        kinds = cls[where]
        steps = (kinds == _OPEN).astype(np.int32) - (kinds == _CLOSE)
        depths = depth + np.cumsum(steps, dtype=np.int32)
        closed = np.flatnonzero(depths == 0)
        if closed.size:
            cut = int(closed[0]) + 1
            self.end = at + int(where[cut - 1]) + 1
            where, kinds, depths = where[:cut], kinds[:cut], depths[:cut]
            raw = raw[: int(where[-1]) + 1]
        self.quoted = self.quoted or bool((raw == ord('"')).any())
        if kinds.size == 0:
            return previous, depth
        prior = np.concatenate(([previous if previous != _OTHER else _OPEN], kinds[:-1]))
        follows = _FOLLOWS[prior, kinds]
        if previous == _OTHER:
            follows[0] = True  # the opening bracket itself
        bad = np.flatnonzero(~follows)
        if bad.size:
            first = int(bad[0])
            reason = ("Expecting ',' delimiter" if prior[first] in (_TOKEN, _CLOSE)
                      else "Expecting value")
            self.mistake = (reason, at + int(where[first]))
            return previous, depth
        self.max_depth = max(self.max_depth, int(depths.max()))
        self._shape(kinds, depths)
        return int(kinds[-1]), int(depths[-1])

    def _shape(self, kinds: np.ndarray, depths: np.ndarray) -> None:
        commas = np.cumsum(kinds == _COMMA, dtype=np.int32)
        opens = np.cumsum(kinds == _OPEN, dtype=np.int32)
        closes = np.cumsum(kinds == _CLOSE, dtype=np.int32)
        tokens = np.flatnonzero(kinds == _TOKEN)
        segment = self.segment
        if tokens.size == 0:
            segment[0] += int(commas[-1])
            segment[1] += int(opens[-1])
            segment[2] += int(closes[-1])
            segment[3] = min(segment[3], int(depths.min())) if self.tokens else int(depths[-1])
            return
        first = int(tokens[0])
        before = slice(0, first)
        lead = (segment[0] + int(commas[first]), segment[1] + int(opens[first]),
                segment[2] + int(closes[first]))
        low = min([segment[3]] + ([int(depths[before].min())] if first else []))
        if self.tokens == 0:
            self.token_depth = int(depths[first])
            if lead[0] or lead[2]:
                self.regular = False  # [[], [1]]: something before the first element
        else:
            if lead[0] != 1:
                self.regular = False
            if low > self.token_depth:
                self.regular = False  # [1, [2, 3]]: deeper than the first element
            self._closes(np.array([max(self.token_depth - low, 0)], dtype=np.uint8))
        if (depths[tokens] != self.token_depth).any():
            self.regular = False
        if tokens.size > 1:
            if (np.diff(commas[tokens]) != 1).any():
                self.regular = False
            lows = np.minimum.reduceat(depths, tokens)[:-1]
            self._closes((self.token_depth - lows).astype(np.uint8))
        last = int(tokens[-1])
        self.segment = [int(commas[-1] - commas[last]), int(opens[-1] - opens[last]),
                        int(closes[-1] - closes[last]), int(depths[last:].min())]
        self.tokens += int(tokens.size)

    def _closes(self, closes: np.ndarray) -> None:
        # A flat array needs no record: no bracket may close between two of its elements.
        if self.token_depth == 1:
            self.regular = self.regular and not closes.any()
        else:
            self.closes.append(closes)

    def dims(self) -> tuple[int, ...] | None:
        """The shape of a regular nested array (None when ragged)."""
        if not self.regular or self.mistake:
            return None
        if self.tokens == 0:
            return (0,)
        if self.segment[0] or self.segment[1]:
            return None  # [[1], []]: something after the last element
        return _dims(self.closes, self.tokens, self.token_depth)


def _dims(marks: list[np.ndarray], count: int, depth: int) -> tuple[int, ...] | None:
    """The shape of a nested array from how many brackets close between each two tokens,
    or None when that pattern is not a regular array's."""
    closes = np.concatenate(marks) if marks else np.zeros(0, np.uint8)
    if depth == 1:
        return None if closes.any() else (count,)
    sizes = []  # elements under one array at each level, innermost first
    for level in range(1, depth):
        reached = np.flatnonzero(closes >= level)
        sizes.append(int(reached[0]) + 1 if reached.size else count)
    for inner, outer in zip([1, *sizes], [*sizes, count], strict=True):
        if outer % inner:
            return None
    step = 1 << 20
    for at in range(0, closes.size, step):
        part = closes[at:at + step]
        index = np.arange(at + 1, at + 1 + part.size, dtype=np.int64)
        expected = np.zeros(part.size, np.uint8)
        for size in sizes:
            expected += (index % size) == 0
        if (expected != part).any():
            return None
    bounds = [1, *sizes, count]
    return tuple(bounds[i + 1] // bounds[i] for i in range(len(bounds) - 1))[::-1]
