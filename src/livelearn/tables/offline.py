"""Offline tables: CSV, Parquet or JSON files loaded with DuckDB into rows by key.

A table's ``as_of`` column is read as integer milliseconds since the epoch UTC
whatever form the file holds it in (ms, ISO 8601 text, a timestamp), so the
server, the joiner and ingest see the same rows; a time without a zone is UTC,
and one between two ms (microseconds, nanoseconds in ISO 8601 text or a Parquet file)
is rounded up: a row is never seen by an event before its time. Text is read as an
event's time is (events.to_ms), in a CSV as in a JSON file: DuckDB's own parsing of
a CSV's dates took "01/02/2024" for February 1st, where a JSON file's was refused.
Other dates, times and timestamps are ISO 8601 text in a row, decimals floats:
the JSON scalars the online store holds. A key is text or an integer and
is looked up as text: a CSV's key column is read as the cells' text ("007" and
"1e3" stay so), a JSON column of mixed types holds each value as it was written
(DuckDB gives such a column as JSON text, '"zoë"' for "zoë"). A missing value is
None: an empty cell, a JSON null, and a NaN, as pandas writes a missing number; an
infinity (JSON's Infinity, a Parquet float) is refused, as the online store would, and
so is an integer beyond 64 bits (DuckDB reads a JSON one as a float, rounded), but in
a CSV file, whose cells cannot say they are text, where such a column is its text.
"""

from __future__ import annotations

import csv
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import duckdb
import orjson

from livelearn.errors import BadInput, ConfigError, NotFound
from livelearn.events import USUAL_FROM_MS, check_ms, digits_of_a_date, show, to_ms, written_as_date
from livelearn.spec import Table
from livelearn.tables.store import is_scalar

log = logging.getLogger("livelearn.tables")

#: Bytes of a table file whose reading is logged, when it starts and ends: 10 MB holds
#: about 200,000 rows of a few columns, which take seconds to read (2 million: a minute).
LARGE = 10_000_000

_READERS = {".csv": "read_csv_auto", ".parquet": "read_parquet", ".json": "read_json_auto",
            ".jsonl": "read_json_auto", ".ndjson": "read_json_auto"}

#: Each reader's options: a CSV file's first line is its header (DuckDB guessed there was
#: none where its names read as the column's values: "id,t", t a bool), and a column's
#: type is all its values' (sample_size=-1: from the first 20,480 rows, a 2.5 after them
#: in a column of integers was read as 2 or 3, in silence).
_OPTIONS = {"read_csv_auto": ", types=?, header=true, sample_size=-1",
            "read_json_auto": ", sample_size=-1", "read_parquet": ""}


def _iso(value: Any) -> str:
    return str(value.isoformat())


#: DuckDB types whose values are no JSON scalar, and what a row holds instead: dates and
#: times as ISO 8601 text, decimals as floats, UUIDs as text.
_PLAIN: dict[str, Callable[[Any], Any]] = {
    "DATE": _iso, "TIME": _iso, "TIMESTAMP": _iso, "TIMESTAMP WITH TIME ZONE": _iso,
    "TIMESTAMP_S": _iso, "TIMESTAMP_MS": _iso, "TIMESTAMP_NS": _iso, "TIMESTAMPTZ_NS": _iso,
    "TIME WITH TIME ZONE": _iso, "TIME_NS": _iso, "DECIMAL": float, "UUID": str}
#: DuckDB types whose values are JSON scalars the online store holds (a float's NaN made
#: None, an infinity refused), not checked one by one: a table of floats loaded a third
#: slower so.
_SCALARS = {"VARCHAR", "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT",
            "USMALLINT", "UINTEGER", "DOUBLE", "FLOAT"}
#: Infinity in a JSON line or a Parquet float column, which no store row holds.
_INFINITE = (float("inf"), float("-inf"))


def load_table(table: Table, data_dir: str | Path = ".") -> dict[str, dict[str, Any]]:
    """Rows of ``table`` by the text of its key column (with ``as_of``, a key's last row)."""
    rows = read_rows(table, data_dir)
    return {str(row[table.key]): row for row in rows}


def read_rows(table: Table, data_dir: str | Path = ".") -> list[dict[str, Any]]:
    """Every row of ``table``'s file, in file order, its ``as_of`` as integer ms.

    BadInput names the table, row (counted from 1, after a CSV's header) and
    column of a key that is missing or empty, or neither text nor an integer (a
    float, as pandas writes an integer column with gaps: 1.0 would never match
    "1"), of a key that a table without ``as_of`` holds twice (both rows named), of an
    infinite number, or an ``as_of`` that is not ms since the epoch (a number of seconds is
    refused, as for events), ISO 8601 text or a timestamp (events.to_ms: no zone means
    UTC; a date of any year, 1970-01-01 included); for a CSV file DuckDB cannot read, the
    line whose cells are not the header's.
    """
    path = Path(data_dir) / table.path
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ConfigError(f"table '{table.name}': {path} is not .csv, .parquet or .json(l)")
    if not path.is_file():
        where = "" if Path(table.path).is_absolute() else (
            f" in {Path(data_dir).resolve()} (the tables' folder: --data, by default the "
            f"pipeline file's)")
        raise NotFound(f"table '{table.name}': no file {table.path}{where}")
    csv_file = reader == "read_csv_auto"
    if csv_file:
        _check_bom(table, path)
    size, started = path.stat().st_size, time.monotonic()
    if size >= LARGE:  # seconds to minutes: not in silence
        log.info("table '%s': reading %s (%.0f MB)", table.name, path, size / 1e6)
    with duckdb.connect() as connection:
        # a time without a zone is UTC, not the machine's zone (DuckDB reads a column of
        # times some with a zone and some without in the session's zone)
        connection.execute("SET TimeZone = 'UTC'")
        rows = _rows(table, path, connection, reader, csv_file)
    if size >= LARGE:
        log.info("table '%s': %d rows read in %.1f s", table.name, len(rows),
                 time.monotonic() - started)
    return rows


def _rows(table: Table, path: Path, connection: duckdb.DuckDBPyConnection, reader: str,
          csv_file: bool) -> list[dict[str, Any]]:
    """``read_rows`` of the file at ``path``, read by ``reader`` on ``connection``."""
    rel = _relation(table, path, connection, reader, csv_file)
    if rel is None:
        return []
    kinds = _Kinds.of(table, dict(zip(rel.columns, map(str, rel.types), strict=True)))
    if table.as_of is not None and kinds.of_column[table.as_of] in ("TIMESTAMP_NS",
                                                                   "TIMESTAMPTZ_NS"):
        rel = rel.project(f"* REPLACE ({_up_to_ms(table.as_of)} AS {_quoted(table.as_of)})")
    try:  # DuckDB reads lazily: a bad value far into the file, or a damaged page, fails here
        if reader == "read_json_auto":
            _check_json_ints(table, path, connection, rel)
        fetched = rel.fetchall()
    except duckdb.Error as e:
        raise _unreadable(table, path, csv_file, e) from None
    columns = rel.columns  # not once a row: a microsecond each
    rows = [dict(zip(columns, row, strict=True)) for row in fetched]
    first: dict[str, int] = {}  # a static table's keys: the row each came in
    times: dict[str, int] = {}  # each as_of text met, in ms (rows of a snapshot share one)
    for n, row in enumerate(rows, start=1):
        kinds.convert(row, f"table '{table.name}', row {n}, column")
        _check_key_and_time(table, row, n, first, times)
    return rows


def _relation(table: Table, path: Path, connection: duckdb.DuckDBPyConnection, reader: str,
              csv_file: bool) -> duckdb.DuckDBPyRelation | None:
    """The file's rows as DuckDB reads them, its key and ``as_of`` columns there; None for
    a JSON file of no row (empty, or ``[]``, as a CSV file of its header only)."""
    # a key is looked up as text, and an as_of in ISO 8601 text is read by events.to_ms,
    # as an event's time: DuckDB's timestamps keep microseconds, and a row valid from
    # 00:00:00.0010005 was valid from 00:00:00.001, seen before its time
    as_text = dict.fromkeys([table.key] + ([table.as_of] if table.as_of else []), "VARCHAR")
    try:
        rel = connection.sql(f"SELECT * FROM {reader}(?{_OPTIONS[reader]})",
                             params=[_literal(path), as_text] if csv_file
                             else [_literal(path)])
        if rel is not None and reader == "read_json_auto" and table.as_of in rel.columns:
            rel = _as_of_as_text(table.as_of, path, connection, rel)
        if rel is not None and csv_file:
            rel = _wide_as_text(path, connection, rel, as_text)
    except duckdb.Error as e:
        raise _unreadable(table, path, csv_file, e) from None
    if rel is None:
        raise BadInput(f"table '{table.name}': {path} is not a table")
    columns = list(rel.columns)
    if not csv_file and columns == ["json"] and table.key != "json":
        # DuckDB's one column for JSON that holds no object: it said "column 'id' not in
        # t.json (columns: json)", a column the file does not have
        if not rel.limit(1).fetchall():
            return None
        raise BadInput(f"table '{table.name}': {path} holds JSON values that are not "
                       f"objects; a table's rows are objects ({{\"{table.key}\": ...}}), "
                       f"one a line or in one array")
    for name in (table.key, table.as_of):
        if name is not None and name not in columns:
            raise BadInput(f"table '{table.name}': column '{name}' not in {path} "
                           f"(columns: {', '.join(columns)})")
    return rel


def _as_of_as_text(as_of: str, path: Path, connection: duckdb.DuckDBPyConnection,
                   rel: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """A JSON file's rows with its ``as_of`` column as the text it holds, where DuckDB
    read that text as timestamps (in microseconds: it drops the nanoseconds); ``rel``,
    the file as DuckDB reads it, if it did not."""
    types = dict(zip(rel.columns, map(str, rel.types), strict=True))
    if types[as_of] not in ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE"):
        return rel
    return connection.sql(f"SELECT * FROM read_json_auto(?{_OPTIONS['read_json_auto']}, "
                          f"columns=?)", params=[_literal(path), {**types, as_of: "VARCHAR"}])


def _wide_as_text(path: Path, connection: duckdb.DuckDBPyConnection,
                  rel: duckdb.DuckDBPyRelation, as_text: dict[str, str]
                  ) -> duckdb.DuckDBPyRelation:
    """A CSV file's rows with its columns of integers beyond 64 bits (HUGEINT, UBIGINT),
    which the online store holds no number of, as their cells' text, exact: a cell cannot
    say it is text (DuckDB reads "18446744073709551616" in quotes as a number too); ``rel``
    if it has none. ``as_text``: the columns already read as text."""
    wide = [c for c, kind in zip(rel.columns, map(str, rel.types), strict=True)
            if kind in ("HUGEINT", "UHUGEINT", "UBIGINT")]
    if not wide:
        return rel
    return connection.sql(f"SELECT * FROM read_csv_auto(?{_OPTIONS['read_csv_auto']})",
                          params=[_literal(path), {**as_text, **dict.fromkeys(wide, "VARCHAR")}])


def _unreadable(table: Table, path: Path, csv_file: bool, error: duckdb.Error) -> BadInput:
    """The error of a file DuckDB cannot read: for a CSV file, what Python's csv finds."""
    problem = _csv_problem(path, table.key, table.as_of) if csv_file else None
    return BadInput(f"table '{table.name}': cannot read {path}: {problem or error}")


@dataclass
class _Kinds:
    """A table's columns by what their values need to become a row's: the JSON scalars
    the online store holds, as the joiner sees them."""

    of_column: dict[str, str]  # DuckDB's type of each column
    mixed: list[str]  # JSON text (a column of values of several types), parsed
    floats: list[str]  # NaN made None, an infinity refused
    plain: list[tuple[str, Callable[[Any], Any]]]  # dates, decimals...: converted
    others: list[str]  # may hold values no store row holds (a list, an object, bytes)

    @classmethod
    def of(cls, table: Table, kinds: dict[str, str]) -> _Kinds:
        return cls(kinds, [c for c, kind in kinds.items() if kind == "JSON"],
                   [c for c, kind in kinds.items() if kind in ("DOUBLE", "FLOAT")],
                   [(c, _PLAIN[kind.split("(")[0]]) for c, kind in kinds.items()
                    if c != table.as_of and kind.split("(")[0] in _PLAIN],
                   [c for c, kind in kinds.items()
                    if c not in (table.key, table.as_of) and kind not in _SCALARS])

    def convert(self, row: dict[str, Any], where: str) -> None:
        """Make ``row``'s values the store's scalars, in place; BadInput naming the column
        (``where`` names the table and row) of a value no store row holds."""
        for c in self.mixed:
            if row[c] is not None:
                row[c] = orjson.loads(row[c])
        for c in self.floats:
            if row[c] != row[c]:  # NaN: how pandas writes a missing number
                row[c] = None
            elif row[c] in _INFINITE:  # a server's store would refuse the table at start
                raise BadInput(f"{where} '{c}': expected a finite number, got {row[c]} (the "
                               f"online store holds finite floats only: write a missing "
                               f"value as null)")
        for c, convert in self.plain:
            if row[c] is not None:
                row[c] = convert(row[c])
        for c in self.others:  # the joiner took them, and a server refused the table at start
            if isinstance(row[c], int) and not is_scalar(row[c]):  # HUGEINT, UBIGINT
                raise BadInput(_wide(f"{where} '{c}'", str(row[c])))
            if not is_scalar(row[c]):
                raise BadInput(f"{where} '{c}': expected text, a number, a bool or nothing "
                               f"(what the servers' online store holds), got {show(row[c])}")


#: A JSON number written as an integer of 19 digits or more (2**63 has 19), which may not
#: fit in 64 bits: DuckDB reads one that does not as a float, and so does orjson.
_LONG_INT = re.compile(rb"[:\[,]\s*-?\d{19,}(?![\d.eE])")


def _check_json_ints(table: Table, path: Path, connection: duckdb.DuckDBPyConnection,
                     rel: duckdb.DuckDBPyRelation) -> None:
    """BadInput naming the first row and column of a JSON file that holds an integer
    beyond 64 bits in a column DuckDB read as floats (or as JSON text, which orjson reads
    so): 123456789012345678901234 became 1.2345678901234569e+23, in silence. The file's
    text is searched first; its floats' columns are read again as text only on a find."""
    types = dict(zip(rel.columns, map(str, rel.types), strict=True))
    inexact = [c for c, kind in types.items() if kind in ("DOUBLE", "FLOAT", "JSON")]
    if not inexact or _LONG_INT.search(path.read_bytes()) is None:
        return
    text = connection.sql(f"SELECT {', '.join(map(_quoted, inexact))} FROM read_json_auto("
                          f"?{_OPTIONS['read_json_auto']}, columns=?)",
                          params=[_literal(path), {**types, **dict.fromkeys(inexact,
                                                                            "VARCHAR")}])
    for n, cells in enumerate(text.fetchall(), start=1):
        for c, cell in zip(inexact, cells, strict=True):
            if cell is not None and re.fullmatch(r"-?[0-9]+", cell) and (
                    len(cell) > 21 or not is_scalar(int(cell))):
                raise BadInput(_wide(f"table '{table.name}', row {n}, column '{c}'", cell))


def _wide(where: str, digits: str) -> str:
    """The error of an integer beyond 64 bits in a table."""
    return (f"{where}: {digits} is an integer of more than 64 bits, which the online store "
            f"does not hold exactly: write it as text (\"{digits}\")")


def _check_key_and_time(table: Table, row: dict[str, Any], n: int,
                        first: dict[str, int], times: dict[str, int]) -> None:
    """BadInput unless row ``n``'s key is text or an integer, and (``first``: the row each
    key came in) once only in a static table; its ``as_of`` made ms, in place (``times``:
    the texts made ms before, each parsed once)."""
    where = f"table '{table.name}', row {n}, column"
    key = row[table.key]
    if key is None or key == "":
        raise BadInput(f"{where} '{table.key}': missing (the key)")
    if not isinstance(key, str | int) or isinstance(key, bool):
        raise BadInput(f"{where} '{table.key}': expected text or an integer (the key), "
                       f"got {show(key)} ({type(key).__name__}), which no request's key "
                       f"would match")
    if table.as_of is not None:
        value = row[table.as_of]
        if type(value) is str and value in times:
            row[table.as_of] = times[value]
            return
        at = f"{where} '{table.as_of}'"
        ms = to_ms(value, at, up=True)
        # a date (ISO 8601 text, a timestamp) is no count of seconds by mistake, whatever
        # its year: "1970-01-01", valid since always, was refused as "0 (seconds?)"
        if written_as_date(value):
            row[table.as_of] = ms
        else:  # a number: seconds, microseconds, a date written as digits are mistakes
            if isinstance(ms, int) and not USUAL_FROM_MS <= ms < 10**13:
                digits_of_a_date(ms, at)  # 20251129103000: rows seen from the year 2611
            row[table.as_of] = check_ms(ms, at)
        if type(value) is str:
            times[value] = row[table.as_of]
    elif first.setdefault(str(key), n) != n:
        raise BadInput(f"table '{table.name}', rows {first[str(key)]} and {n}, column "
                       f"'{table.key}': the key {str(key)!r} twice; a table without "
                       f"as_of holds one row per key")


#: The byte order mark, and what is wrong with one after a CSV file's start.
BOM = "\ufeff"
STRAY_BOM = ("holds a byte order mark (U+FEFF), which only a file's start may hold: two files "
             "joined into one? Remove it")


def _check_bom(table: Table, path: Path) -> None:
    """BadInput naming the line of a CSV file that holds a byte order mark after its start
    (two files joined: the second one's header became a row of key "\\ufeffid")."""
    text = path.read_bytes()
    at = text.find(BOM.encode(), 1)
    if at >= 0:
        line = text.count(b"\n", 0, at) + 1
        raise BadInput(f"table '{table.name}': {path} line {line} {STRAY_BOM}")


def _literal(path: Path) -> str:
    """``path`` as a DuckDB pattern of file names that matches that file only: each of
    * ? [ in a class of its own ([*]). A tables' folder named data[1] was read as data1,
    and one named a*b as every folder a...b, the rows of each file together."""
    return re.sub(r"([*?\[])", r"[\1]", str(path))


def _up_to_ms(column: str) -> str:
    """SQL for a time in nanoseconds (DuckDB's TIMESTAMP_NS, TIMESTAMPTZ_NS) as a timestamp
    rounded up to the ms: Python's datetime holds microseconds, and DuckDB gave
    00:01:00.0010005 as 00:01:00.001, a row seen half a microsecond before its time."""
    ns = f"epoch_ns({_quoted(column)})"
    # whether DuckDB's // and % round toward zero or down, this is the ceiling
    return f"make_timestamp(({ns} // 1000000 + ({ns} % 1000000 > 0)::BIGINT) * 1000)"


def _quoted(column: str) -> str:
    """A column's name as an SQL identifier."""
    return '"' + column.replace('"', '""') + '"'


def _csv_problem(path: Path, key: str, as_of: str | None) -> str | None:
    """What is wrong with a CSV file DuckDB could not read, as Python's csv module sees
    it: the key or the ``as_of`` column not among the header's names, or the first row
    whose number of cells is not the header's (DuckDB's sniffer then fails); None if it
    finds nothing."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        names, rows = csv_cells(f)
        if not names:  # not "column 'id' not in the header (columns: )"
            return f"the file is empty: no header naming the key column '{key}'"
        for name, what in ((key, ""), (as_of, " (as_of)")):
            if name is not None and name not in names:
                return f"column '{name}'{what} not in the header (columns: {', '.join(names)})"
        for line, cells in rows:
            if len(cells) != len(names):
                return f"line {line} has {len(cells)} cells, the header {len(names)}"
    return None


def csv_cells(f: IO[str]) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """A CSV file's header, its names stripped of the spaces around them (``user , ts``
    names "user" and "ts"), and (line, cells) for each row after it: ``line`` is where
    the row starts in the file (a row may hold newlines in quotes); blank lines are
    skipped, before the header too (as DuckDB does). A cell may be of any length (the
    csv module stops at 131,072 characters by default: a long text, or the rest of a
    file after a quote never closed)."""
    csv.field_size_limit(2**31 - 1)  # the most a C long takes everywhere
    reader = csv.reader(f)
    # a blank first line was taken for a header of no name: every row, the header
    # itself included, had "more cells than the header"
    names = [name.strip() for name in next((cells for cells in reader if cells), [])]

    def rows() -> Iterator[tuple[int, list[str]]]:
        before = reader.line_num
        for cells in reader:
            start, before = before + 1, reader.line_num
            if cells:
                yield start, cells

    return names, rows()
