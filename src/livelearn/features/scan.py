"""Tokens of many feature dicts at native speed: a numba kernel reads the dicts themselves.

``scan(rows)`` walks the rows in a numba kernel that calls CPython's C API
(``PyDict_Next``, ``PyUnicode_AsUTF8AndSize``, ``PyLong_AsLongLong``) and, for
every (name, value) item, gives the CRC-32 of ``"name"`` and of ``"name=value"``
(the value's text: the string itself, ``True`` or ``False`` for a bool, the
decimal digits of an int; 0 for a float) and the item's value as a
float (the float itself, the int rounded as ``float(int)`` rounds, 1.0 for
strings, 1.0 or 0.0 for bools). Nothing is converted to text and parsed back, so
every number is exact.

Only exact types are read natively: ``dict`` rows, ``str`` names, ``str``,
``bool``, ``int`` (of 64 bits), ``float`` and ``None`` values. A row holding
anything else (a subclass, a list, an int of more than 64 bits, a string that
UTF-8 cannot encode) is marked HARD, for the caller to read in Python; reading
never runs Python code, so the rows cannot change under it. The kernel holds
borrowed references only, to rows that the caller keeps alive.

The object layout this relies on (a type pointer, then a float's value, after
the reference count) is checked at import; where it does not hold (another
interpreter or build), ``scan`` returns None and callers take the Python path.

The kernel collects every item's objects first, prefetching them, then reads
them: rows built one by one have their numbers scattered in memory, and
waiting for each cost more than all the rest. ``transforms`` calls ``read`` from its own kernel:
numba's cache notices a change to a kernel's own file only, so after editing
this file, delete the ``*.nbi`` and ``*.nbc`` files under ``features/__pycache__``.
"""

from __future__ import annotations

import ctypes
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic

#: Kinds of value: string, bool, integer, float, null.
STR, BOOL, INT, NUM, NULL = 0, 1, 2, 3, 4
#: Row status: OK, or HARD (read it in Python).
OK, HARD = 0, 2

#: CPython's object header: the type pointer at 8 bytes, a float's value at 16.
_TYPE_AT, _FLOAT_AT = 8, 16
#: A dict's pointer to its table, and about how many bytes precede the table's items.
_KEYS_AT, _KEYS_HEAD = 32, 48


def _layout_holds() -> bool:
    try:
        probe = 1.5 + len(__name__)  # a float object made at run time
        return (ctypes.c_ssize_t.from_address(id(probe) + _TYPE_AT).value == id(float)
                and ctypes.c_double.from_address(id(probe) + _FLOAT_AT).value == probe
                and ctypes.sizeof(ctypes.c_void_p) == 8)
    except (AttributeError, ValueError):
        return False


_NATIVE = _layout_holds()
_API = ("PyDict_Next", "PyDict_Size", "PyList_GetItem", "PyTuple_GetItem", "PyTuple_Size",
        "PyUnicode_AsUTF8AndSize", "PyLong_AsLongLong", "PyErr_Occurred", "PyErr_Clear")
if _NATIVE:
    for _symbol in _API:  # make the interpreter's own functions known to numba's linker
        binding.add_symbol(_symbol, ctypes.cast(getattr(ctypes.pythonapi, _symbol),
                                                ctypes.c_void_p).value)

# Pointers are passed as int64 (one register either way on a 64-bit ABI).
_dict_next = types.ExternalFunction("PyDict_Next", types.int32(types.int64, types.int64,
                                                               types.int64, types.int64))
_dict_size = types.ExternalFunction("PyDict_Size", types.int64(types.int64))
_list_item = types.ExternalFunction("PyList_GetItem", types.int64(types.int64, types.int64))
_tuple_item = types.ExternalFunction("PyTuple_GetItem", types.int64(types.int64, types.int64))
_tuple_size = types.ExternalFunction("PyTuple_Size", types.int64(types.int64))
_utf8 = types.ExternalFunction("PyUnicode_AsUTF8AndSize", types.int64(types.int64, types.int64))
_as_int64 = types.ExternalFunction("PyLong_AsLongLong", types.int64(types.int64))
_err_occurred = types.ExternalFunction("PyErr_Occurred", types.int64())
_err_clear = types.ExternalFunction("PyErr_Clear", types.void())


@intrinsic
def _load_int64(typingctx, address):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.load(builder.inttoptr(args[0], ir.IntType(64).as_pointer()))
    return types.int64(types.int64), codegen


@intrinsic
def _load_float64(typingctx, address):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.load(builder.inttoptr(args[0], ir.DoubleType().as_pointer()))
    return types.float64(types.int64), codegen


@intrinsic
def _load_byte(typingctx, address):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        byte = builder.load(builder.inttoptr(args[0], ir.IntType(8).as_pointer()))
        return builder.zext(byte, ir.IntType(64))
    return types.int64(types.int64), codegen


@intrinsic
def _prefetch(typingctx, address):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        byte_ptr, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]),
            "llvm.prefetch.p0")
        builder.call(fn, [builder.inttoptr(args[0], byte_ptr), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.none(types.int64), codegen


def _crc_table() -> np.ndarray:
    """zlib's CRC-32 tables for slicing by 8 (table[0] is the byte-at-a-time one)."""
    table = np.zeros((8, 256), dtype=np.int64)
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[0, b] = c
    for b in range(256):
        for s in range(1, 8):
            table[s, b] = (table[s - 1, b] >> 8) ^ table[0, table[s - 1, b] & 0xFF]
    return table


_TABLE = _crc_table()
#: Addresses of the types read natively, in this order, and of True.
_DICT, _STR, _FLOAT, _INT, _BOOL, _NONE, _TRUE_AT, _TUPLE = range(8)
_OBJECTS = np.array([id(dict), id(str), id(float), id(int), id(bool), id(type(None)), id(True),
                     id(tuple)], dtype=np.int64)
_TRUE = np.frombuffer(b"True", dtype=np.uint8).astype(np.int64)
_FALSE = np.frombuffer(b"False", dtype=np.uint8).astype(np.int64)
_EQ = ord("=")
_CACHE = 256  # names remembered per call (by object), as open addressing
#: An empty table of names (see ``name_table``).
NO_NAMES = (np.zeros(1, dtype=np.int64), np.full(1, -1, dtype=np.int64),
            np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=np.int64))


def name_table(names: Sequence[str]) -> tuple[np.ndarray, ...]:
    """An open-addressing table from the CRC-32 of a name to its slot (its position), and
    the names' UTF-8 (slot s at ``text[starts[s]:starts[s+1]]``): a name of a row is
    its slot's only if its bytes are the same, not its CRC alone (names of equal CRC-32
    exist, 'plumless' and 'buckeroo'). The names' CRCs must differ."""
    encoded = [n.encode() for n in names]
    size = 1 << max(3, (4 * len(names)).bit_length())
    keys, slots = np.zeros(size, dtype=np.int64), np.full(size, -1, dtype=np.int64)
    for s, c in enumerate(zlib.crc32(e) for e in encoded):
        h = c & (size - 1)
        while slots[h] >= 0:
            h = (h + 1) & (size - 1)
        keys[h], slots[h] = c, s
    text = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    starts = np.cumsum([0] + [len(e) for e in encoded]).astype(np.int64)
    return keys, slots, text, starts


@numba.njit(cache=True, inline="always")
def _lookup(keys, slots, key):  # type: ignore[no-untyped-def]
    h = key & (len(keys) - 1)
    while slots[h] >= 0:
        if keys[h] == key:
            return slots[h]
        h = (h + 1) & (len(keys) - 1)
    return -1


@dataclass(frozen=True)
class Tokens:
    """Item t of row r is at t in [offsets[r], offsets[r+1]), in the row's dict order.

    ``key`` and ``token`` are full 32-bit CRCs (of "name", of "name=value");
    ``value`` the float value; ``kind`` one of STR ... NULL; ``slot`` the name's slot
    in the caller's table of names (-1 if not there, or no table); ``status`` per
    row (the items of a HARD row are placeholders).
    """

    key: np.ndarray
    token: np.ndarray
    value: np.ndarray
    kind: np.ndarray
    slot: np.ndarray
    offsets: np.ndarray
    status: np.ndarray


def scan(rows: Sequence[object]) -> Tokens | None:
    """The tokens of ``rows`` (mappings of str names), or None where the kernel cannot run.

    A row that is not a ``dict`` has no items here (it is HARD).
    """
    seq = sequence(rows)
    return None if seq is None else Tokens(*read(*arguments(seq), *NO_NAMES)[:7])  # type: ignore[call-arg]


def sequence(rows: Sequence[object]) -> list[object] | tuple[object, ...] | None:
    """``rows`` as a list or tuple for ``read``, or None where it cannot run; keep it alive
    while ``read`` runs."""
    if not _NATIVE:
        return None
    return rows if type(rows) is list or type(rows) is tuple else list(rows)  # type: ignore[return-value]


def arguments(seq: list[object] | tuple[object, ...], pairs: bool = False) -> tuple[object, ...]:
    """The arguments of ``read`` but the table of names (a numba function, for kernels
    that scan rows themselves); ``pairs``: the items are (row, label) tuples."""
    return id(seq), len(seq), type(seq) is list, pairs, _OBJECTS, _TABLE, _TRUE, _FALSE


@numba.njit(cache=True, inline="always")
def _crc_bytes(crc, address, size, table):  # type: ignore[no-untyped-def]
    """CRC-32 (not finalized) of ``size`` bytes at ``address``, 8 at a time, then one by one."""
    j = 0
    while j + 8 <= size:
        lo = _load_int64(address + j)
        a = (crc ^ lo) & 0xFFFFFFFF
        b = (lo >> 32) & 0xFFFFFFFF
        crc = (table[7, a & 0xFF] ^ table[6, (a >> 8) & 0xFF] ^ table[5, (a >> 16) & 0xFF]
               ^ table[4, a >> 24] ^ table[3, b & 0xFF] ^ table[2, (b >> 8) & 0xFF]
               ^ table[1, (b >> 16) & 0xFF] ^ table[0, b >> 24])
        j += 8
    while j < size:
        crc = table[0, (crc ^ _load_byte(address + j)) & 0xFF] ^ (crc >> 8)
        j += 1
    return crc


@numba.njit(cache=True, inline="always")
def _crc_word(crc, word, table):  # type: ignore[no-untyped-def]
    for j in range(len(word)):
        crc = table[0, (crc ^ word[j]) & 0xFF] ^ (crc >> 8)
    return crc


@numba.njit(cache=True, inline="always")
def _crc_int(crc, v, table):  # type: ignore[no-untyped-def]
    """CRC-32 continued over the decimal digits of ``v`` (not the smallest int64)."""
    if v < 0:
        crc = table[0, (crc ^ 45) & 0xFF] ^ (crc >> 8)
        v = -v
    scale = 1
    while scale <= v // 10:
        scale *= 10
    while scale > 0:
        crc = table[0, (crc ^ (48 + (v // scale) % 10)) & 0xFF] ^ (crc >> 8)
        scale //= 10
    return crc


@numba.njit(cache=True, inline="always")
def _same(address, size, text, lo, hi):  # type: ignore[no-untyped-def]
    """Whether the ``size`` bytes at ``address`` are ``text[lo:hi]``."""
    if size != hi - lo:
        return False
    for j in range(size):
        if _load_byte(address + j) != text[lo + j]:
            return False
    return True


@numba.njit(cache=True)
def _name(name, h, table, cache, words, keys, slots, text, starts):  # type: ignore[no-untyped-def]
    """(CRC of the name, CRC state after "name=", slot) of a str object not in ``cache``,
    put at h if there is room; (-1, 0, -1) if its UTF-8 cannot be had."""
    address = _utf8(name, np.int64(words.ctypes.data))
    if address == 0:
        _err_clear()
        return -1, 0, -1
    state = _crc_bytes(0xFFFFFFFF, address, words[0], table)
    crc, after = state ^ 0xFFFFFFFF, table[0, (state ^ _EQ) & 0xFF] ^ (state >> 8)
    slot = _lookup(keys, slots, crc)
    if slot >= 0 and not _same(address, words[0], text, starts[slot], starts[slot + 1]):
        slot = -1  # another name of the same CRC-32
    if words[2] < len(cache) // 2:
        cache[h, 0], cache[h, 1], cache[h, 2], cache[h, 3] = name, crc, after, slot
        words[2] += 1
    return crc, after, slot


@numba.njit(cache=True, inline="always")
def _prefetch_entries(row, size):  # type: ignore[no-untyped-def]
    """Prefetch the table of a dict of ``size`` items, where CPython 3.11 to 3.14 point
    to it (``ma_keys``; a hint only: were it elsewhere, nothing but speed would change)."""
    keys = _load_int64(row + _KEYS_AT)
    for line in range(0, _KEYS_HEAD + 24 * size, 64):
        _prefetch(keys + line)


@numba.njit(cache=True, inline="always")
def _unpair(item, objects):  # type: ignore[no-untyped-def]
    """(row, label) objects of a 2-tuple at ``item``, or (0, 0) if it is not one."""
    if _load_int64(item + _TYPE_AT) != objects[_TUPLE] or _tuple_size(item) != 2:
        return 0, 0
    return _tuple_item(item, 0), _tuple_item(item, 1)


@numba.njit(cache=True, inline="always")
def _label(obj, objects):  # type: ignore[no-untyped-def]
    """(the value of a float, int or bool object as ``float()`` gives it, True), or (0, False)."""
    typ = _load_int64(obj + _TYPE_AT)
    if typ == objects[_FLOAT]:
        return _load_float64(obj + _FLOAT_AT), True
    if typ == objects[_BOOL]:
        return (1.0 if obj == objects[_TRUE_AT] else 0.0), True
    if typ == objects[_INT]:
        i = _as_int64(obj)
        if i == -1 and _err_occurred() != 0:
            _err_clear()
            return 0.0, False
        return float(i), True
    return 0.0, False


@numba.njit(cache=True)
def read(seq, n, is_list, pairs, objects, table, true, false, keys, slots, text, starts):  # type: ignore[no-untyped-def]
    """The arrays of ``Tokens`` for the list or tuple at address ``seq`` of ``n`` rows,
    then the labels; ``pairs``: its items are (row, label) 2-tuples, else rows (labels 0);
    ``keys``, ``slots``, ``text`` and ``starts``: a ``name_table`` (or ``NO_NAMES``).

    Three passes, so that memory is asked for well before it is needed: the rows
    (prefetching each dict, or each pair and then its dict and label), their items
    (prefetching each value), then the values.
    A pair whose label is not a float, int or bool is HARD.
    """
    addresses, labels = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    status = np.zeros(n, dtype=np.int8)
    for r in range(n):
        addresses[r] = _list_item(seq, r) if is_list else _tuple_item(seq, r)
        _prefetch(addresses[r])
    for r in range(n if pairs else 0):  # the pairs are near, now: their rows and labels
        addresses[r], labels[r] = _unpair(addresses[r], objects)
        _prefetch(addresses[r])
        _prefetch(labels[r])
    for r in range(n):
        size = 0
        if addresses[r] != 0 and _load_int64(addresses[r] + _TYPE_AT) == objects[_DICT]:
            size = _dict_size(addresses[r])
            _prefetch_entries(addresses[r], size)
        else:
            status[r] = HARD
        offsets[r + 1] = offsets[r] + size
    end = offsets[n]
    names, objs = np.empty(end, dtype=np.int64), np.empty(end, dtype=np.int64)
    words = np.zeros(6, dtype=np.int64)  # size, position, names cached, key, value (out)
    at = np.int64(words.ctypes.data)
    for r in range(n):
        t, words[1] = offsets[r], 0
        while status[r] != HARD and t < offsets[r + 1] and _dict_next(addresses[r], at + 8,
                                                                        at + 24, at + 32):
            names[t], objs[t] = words[3], words[4]
            _prefetch(objs[t])
            t += 1
        if t < offsets[r + 1]:
            status[r] = HARD
    key, token = np.empty(end, dtype=np.uint32), np.empty(end, dtype=np.uint32)
    value, kind = np.empty(end), np.full(end, NULL, dtype=np.int8)
    slot = np.full(end, -1, dtype=np.int32)
    cache = np.zeros((_CACHE, 4), dtype=np.int64)
    label = np.zeros(n)
    for r in range(n):
        if pairs and status[r] != HARD:
            label[r], known = _label(labels[r], objects)
            if not known:
                status[r] = HARD
        if status[r] == HARD:
            continue
        for t in range(offsets[r], offsets[r + 1]):
            name, obj = names[t], objs[t]
            h = ((name >> 4) * 0x9E3779B1) & (_CACHE - 1)  # names are remembered by object
            while cache[h, 0] != 0 and cache[h, 0] != name:
                h = (h + 1) & (_CACHE - 1)
            crc, state, s = cache[h, 1], cache[h, 2], cache[h, 3]
            if cache[h, 0] != name:
                crc = -1
                if _load_int64(name + _TYPE_AT) == objects[_STR]:
                    crc, state, s = _name(name, h, table, cache, words, keys, slots, text,
                                           starts)
            if crc < 0:
                status[r] = HARD
                break
            typ = _load_int64(obj + _TYPE_AT)
            v, k = 1.0, STR
            if typ == objects[_FLOAT]:
                v, k, state = _load_float64(obj + _FLOAT_AT), NUM, 0xFFFFFFFF  # token 0
            elif typ == objects[_STR]:
                address = _utf8(obj, at)
                if address == 0:
                    _err_clear()
                    status[r] = HARD
                    break
                state = _crc_bytes(state, address, words[0], table)
            elif typ == objects[_BOOL]:
                truth = obj == objects[_TRUE_AT]
                state = _crc_word(state, true if truth else false, table)
                v, k = (1.0 if truth else 0.0), BOOL
            elif typ == objects[_INT]:
                i = _as_int64(obj)
                if (i == -1 and _err_occurred() != 0) or i == -9223372036854775808:
                    _err_clear()
                    status[r] = HARD
                    break
                state = _crc_int(state, i, table)
                v, k = float(i), INT
            elif typ == objects[_NONE]:
                v, k = np.nan, NULL
            else:
                status[r] = HARD
                break
            key[t], token[t], value[t], kind[t], slot[t] = crc, state ^ 0xFFFFFFFF, v, k, s
    return key, token, value, kind, slot, offsets, status, label
