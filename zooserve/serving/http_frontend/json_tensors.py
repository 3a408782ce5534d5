"""Strict, bounded JSON for request bodies: UTF-8 only, no key twice in an object, and a large
KServe v2 infer body decoded without a Python object per tensor element.

Small bodies (the hot path) go through the stdlib's C parser as they always have. A body of
`SMALL_BODY` bytes or more is parsed here: its skeleton (objects, strings, short arrays)
becomes Python objects as usual, but an array of numbers (or true/false/null/NaN/Infinity,
or the "NaN"/"Infinity"/"-Infinity" texts), flat or nested, of `MIN_BLOCK` bytes or more
stays in the body as a `NumberArray`: its extent and nesting found with vectorised numpy,
its tokens checked by the stdlib parser a `PIECE` of the body at a time, and its elements
later converted straight into an array of the tensor's datatype (`zooserve.protocol.codecs` asks it,
with the same checks and messages as for a list). A flat array of text in inputs[i].data
stays in the body too (a `StringArray`), converted a piece at a time. Everything else is
counted and bounded: at most one Python value per `BYTES_PER_VALUE` bytes of body, at most
`MAX_TENSORS` inputs or outputs, at least `BYTES_PER_STRING` body bytes per text element.
Peak memory beyond the body is the result array plus a few pieces, whatever the body holds."""

from __future__ import annotations

import codecs as text_codecs
import json
import json.scanner
import math
import re
from json.decoder import scanstring

import numpy as np

from zooserve.protocol import codecs
from zooserve.protocol.errors import invalid_argument

SMALL_BODY = 64 * 1024  # below this, stdlib json on the whole body (at most ~25x of 64 KiB)
MIN_BLOCK = 1024  # shorter arrays become lists, as stdlib json makes them
PIECE = 64 * 1024  # bytes of an array parsed to Python objects at a time
RAGGED_AS_LIST = 4 << 20  # a ragged array up to this size is read as lists to be refused
MAX_DEPTH = 512  # nesting json's own recursion limit would refuse anyway
SCAN_CHUNK = 64 * 1024  # bytes of an array's text classified by numpy at a time
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
STRINGS_PER_PIECE = 4096
WS = b" \t\n\r"
_WS = re.compile(rb"[ \t\n\r]*")
_NUMBER = re.compile(rb"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_PLAIN_STRING = re.compile(rb'"[^"\\\x00-\x1f]*+"')
_ANY_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_S = rb'"(?:[^"\\]++|\\.)*+"'
_STRING_ARRAY = re.compile(
    rb"\[[ \t\n\r]*(?:" + _S + rb"[ \t\n\r]*(?:,[ \t\n\r]*" + _S + rb"[ \t\n\r]*)*+)?\]",
    re.DOTALL)
_STRING_RUN = re.compile(  # up to STRINGS_PER_PIECE elements of a string array, from one
    rb"[ \t\n\r]*" + _S + rb"[ \t\n\r]*(?:,[ \t\n\r]*" + _S
    + rb"[ \t\n\r]*){0,%d}" % (STRINGS_PER_PIECE - 1), re.DOTALL)
# What an array of numbers and literals can hold; an array that leaves it is not one.
_RUN = re.compile(rb'[-0-9+.eE,\[\] \t\n\r"truefalsnNIiy]*')
# What a float past 1.8e308 needs: a three-digit exponent, or 300 digits.
_HUGE_EXPONENT = re.compile(rb"[eE]\+?0*[1-9][0-9]{2}")
_LONG_DIGITS = re.compile(rb"[0-9]{300}")
_BRACKETS_TO_SPACES = bytes.maketrans(b"[]", b"  ")
_EMPTY = re.compile(rb"\[[ \t\n\r]*\]")  # [] in a ragged array: one element, to check the rest
_LITERALS = ((b"null", None), (b"true", True), (b"false", False), (b"NaN", math.nan),
             (b"Infinity", math.inf), (b"-Infinity", -math.inf))

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


class _TooMany(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _finite_or_refused(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: json would read it as infinity, silently
        raise ValueError(f"the number {text[:40]} is out of range for a 64-bit float")
    return value


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
_SCAN = json.scanner.make_scanner(json.JSONDecoder(parse_float=_finite_or_refused,
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
            return json.loads(text, parse_float=_finite_or_refused,
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
    except ValueError as exc:  # int digits beyond Python's limit; _finite_or_refused
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
        for at in range(0, len(data), PIECE):
            try:
                decoder.decode(data[at:at + PIECE], at + PIECE >= len(data))
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
            return _finite_or_refused(match.group().decode()), match.end()
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
            block = _number_array(self, at, run_end, later)
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


class NumberArray(codecs.ElementSource):
    """A JSON array of numbers (and true/false/null/NaN/Infinity) still in the body: where it
    is, its shape (None when ragged) and its nesting depth."""

    def __init__(self, parser: _Parser, start: int, end: int,
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
                                        json.loads(text, parse_float=_finite_or_refused), role)
        empty = self.dims is not None and 0 in self.dims  # [[], []]: brackets only
        values = () if empty else (v for _, v in _pieces(self.data, self.start + 1,
                                                          self.end - 1))
        return codecs.elements_from_pieces(name, datatype, role, self.dims, self.depth, values)


class StringArray(codecs.ElementSource):
    """A flat JSON array of text still in the body (inputs[i].data): its syntax checked and
    its elements counted when parsed, converted a piece at a time when asked."""

    def __init__(self, parser: _Parser, start: int, end: int) -> None:
        self.parser, self.start, self.end = parser, start, end
        self.count = sum(len(v) for _, v in _string_pieces(parser, start, end))

    def elements(self, name: str, datatype: str, role: str) -> np.ndarray:
        values = (v for _, v in _string_pieces(self.parser, self.start, self.end))
        return codecs.elements_from_pieces(name, datatype, role, (self.count,), 1, values)


def _string_pieces(parser: _Parser, start: int, end: int):
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
            hook = _finite_or_refused if huge else None
            yield at, json.loads(f"[{text}]", parse_float=hook)
        except json.JSONDecodeError as exc:
            raise _PieceError(exc.msg, at + exc.pos - 1) from None
        at = cut + 1


def _number_array(parser: _Parser, start: int, run_end: int,
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
