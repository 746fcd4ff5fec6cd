"""Tokens of many feature dicts at native speed: orjson writes them, numba reads them.

``scan(rows)`` serializes the rows with orjson (C) and reads the JSON back in a
numba kernel that computes, for every (name, value) item, the CRC-32 of
``"name"`` and of ``"name=value"`` (the value's text: the string itself, ``True``
or ``False`` for a bool, the JSON text of a number) and the item's value as a
float (1.0 for strings, 1.0 or 0.0 for bools). A number's value is parsed only
when the parse is exact (at most 15 significant digits and a power of ten within
1e±22, or an integer below 1e18: ints, counts, prices, rounded values); other
numbers are of kind NUMX, for the caller to read in Python. A row whose names or
strings hold an escape that orjson writes only for non-ASCII is marked HARD.
Nested values (lists, dicts) make ``scan`` return None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import orjson

#: Kinds of value: string, bool, integer text, other number, number not parsed, null.
STR, BOOL, INT, NUM, NUMX, NULL = 0, 1, 2, 3, 4, 5
#: Row status: OK, or HARD (its names or strings need Python).
OK, HARD = 0, 2


def _crc_table() -> np.ndarray:
    """zlib's CRC-32 table, byte at a time."""
    table = np.zeros(256, dtype=np.int64)
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[b] = c
    return table


_TABLE = _crc_table()
_POW10 = np.array([10.0 ** e for e in range(23)])
_TRUE = np.frombuffer(b"=True", dtype=np.uint8).copy()
_FALSE = np.frombuffer(b"=False", dtype=np.uint8).copy()
_EQ = ord("=")


@dataclass(frozen=True)
class Tokens:
    """Item t of row r is at t in [offsets[r], offsets[r+1]), in the row's dict order.

    ``key`` and ``token`` are full 32-bit CRCs (of "name", of "name=value");
    ``value`` the float value; ``kind`` one of STR ... NULL; ``status`` per row.
    """

    key: np.ndarray
    token: np.ndarray
    value: np.ndarray
    kind: np.ndarray
    offsets: np.ndarray
    status: np.ndarray


def scan(rows: Sequence[object]) -> Tokens | None:
    """The tokens of ``rows`` (dicts of str names), or None if orjson or the kernel cannot."""
    try:
        data = orjson.dumps(rows if isinstance(rows, list | tuple) else list(rows),
                            option=orjson.OPT_PASSTHROUGH_SUBCLASS)
    except TypeError:
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    n = len(rows)
    cap = len(buf) // 6 + 1
    key = np.empty(cap, dtype=np.uint32)
    token = np.empty(cap, dtype=np.uint32)
    value = np.empty(cap)
    kind = np.empty(cap, dtype=np.int8)
    offsets = np.zeros(n + 1, dtype=np.int64)
    status = np.zeros(n, dtype=np.int8)
    if not _scan(buf, _TABLE, _POW10, _TRUE, _FALSE, key, token, value, kind, offsets, status):
        return None
    end = offsets[-1]
    return Tokens(key[:end], token[:end], value[:end], kind[:end], offsets, status)


@numba.njit(cache=True, inline="always")
def _crc_byte(crc: int, b: int, table: np.ndarray) -> int:
    return table[(crc ^ b) & 0xFF] ^ (crc >> 8)


@numba.njit(cache=True, inline="always")
def _string(buf, pos, crc, table):  # type: ignore[no-untyped-def]
    """Read the JSON string whose opening quote is at pos; CRC its text.

    Returns (position after the closing quote, crc, ok); ok is False for an escape
    other than the ones orjson writes for ASCII.
    """
    pos += 1
    ok = True
    while True:
        b = buf[pos]
        if b == 34:  # '"'
            return pos + 1, crc, ok
        if b == 92:  # '\\'
            e = buf[pos + 1]
            pos += 2
            if e == 117:  # \uXXXX
                code = 0
                for j in range(4):
                    h = buf[pos + j]
                    code = code * 16 + (h - 48 if h <= 57 else (h | 32) - 87)
                pos += 4
                if code >= 0x80:
                    ok = False
                b = code & 0x7F
            elif e == 110:
                b = 10
            elif e == 116:
                b = 9
            elif e == 114:
                b = 13
            elif e == 98:
                b = 8
            elif e == 102:
                b = 12
            else:  # \" \\ \/
                b = e
            crc = _crc_byte(crc, b, table)
            continue
        crc = _crc_byte(crc, b, table)
        pos += 1


@numba.njit(cache=True, inline="always")
def _number(buf, pos, crc, table, pow10):  # type: ignore[no-untyped-def]
    """Read a JSON number at pos: (position after it, crc of its text, value, kind)."""
    negative = buf[pos] == 45
    mantissa, digits, exp10, exp_sign, exp_part = 0, 0, 0, 1, 0
    fraction = decimal = False
    while pos < len(buf):
        b = buf[pos]
        if 48 <= b <= 57:
            if decimal:
                exp_part = exp_part * 10 + (b - 48) if exp_part < 100000 else exp_part
            elif mantissa > 0 or b != 48:
                if digits < 18:
                    mantissa = mantissa * 10 + (b - 48)
                    exp10 -= 1 if fraction else 0
                else:
                    exp10 += 0 if fraction else 1
                digits += 1
            elif fraction:
                exp10 -= 1
        elif b == 46:
            fraction = True
        elif b == 101 or b == 69:
            decimal = True
        elif b == 45 and decimal:
            exp_sign = -1
        elif b != 43 and b != 45:
            break
        crc = _crc_byte(crc, b, table)
        pos += 1
    e = exp10 + exp_sign * exp_part
    kind = NUM if fraction or decimal else INT
    if kind == INT and digits <= 18:
        v = float(mantissa)
    elif digits <= 15 and -22 <= e <= 22:
        v = float(mantissa) * pow10[e] if e >= 0 else float(mantissa) / pow10[-e]
    else:
        return pos, crc, np.nan, NUMX
    return pos, crc, -v if negative else v, kind


@numba.njit(cache=True)
def _scan(buf, table, pow10, true, false, key, token, value, kind, offsets, status):  # type: ignore[no-untyped-def]
    pos, t, r = 1, 0, 0  # buf[0] is '['
    while buf[pos] == 123:  # '{'
        pos += 1
        while buf[pos] == 34:
            pos, kcrc, ok = _string(buf, pos, 0xFFFFFFFF, table)
            pos += 1  # ':'
            key[t] = kcrc ^ 0xFFFFFFFF
            crc = _crc_byte(kcrc, _EQ, table)
            b = buf[pos]
            v, k = 1.0, STR
            if b == 34:
                pos, crc, ok_value = _string(buf, pos, crc, table)
                ok = ok and ok_value
            elif b == 116 or b == 102:
                word = true if b == 116 else false
                for j in range(1, len(word)):
                    crc = _crc_byte(crc, word[j], table)
                pos += len(word) - 1
                k, v = BOOL, 1.0 if b == 116 else 0.0
            elif b == 110:
                pos += 4
                k, v = NULL, np.nan
            elif b == 91 or b == 123:
                return False
            else:
                pos, crc, v, k = _number(buf, pos, crc, table, pow10)
            if not ok:
                status[r] = HARD
            token[t], value[t], kind[t] = crc ^ 0xFFFFFFFF, v, k
            t += 1
            if buf[pos] == 44:  # ','
                pos += 1
        pos += 1  # '}'
        r += 1
        offsets[r] = t
        if buf[pos] == 44:
            pos += 1
    return True
