"""Offline tables: CSV, Parquet or JSON-lines files loaded with DuckDB into rows by key.

A table's ``as_of`` column is read as integer milliseconds since the epoch UTC
whatever form the file holds it in (ms, ISO 8601 text, a timestamp), so the
server, the joiner and ingest see the same rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from livelearn.errors import BadInput, ConfigError, NotFound
from livelearn.events import check_ms, to_ms
from livelearn.spec import Table

_READERS = {".csv": "read_csv_auto", ".parquet": "read_parquet", ".json": "read_json_auto",
            ".jsonl": "read_json_auto", ".ndjson": "read_json_auto"}


def load_table(table: Table, data_dir: str | Path = ".") -> dict[str, dict[str, Any]]:
    """Rows of ``table`` by the string value of its key column (the last row of a key wins)."""
    rows = read_rows(table, data_dir)
    return {str(row[table.key]): row for row in rows}


def read_rows(table: Table, data_dir: str | Path = ".") -> list[dict[str, Any]]:
    """Every row of ``table``'s file, in file order, its ``as_of`` as integer ms.

    BadInput names the table, row (counted from 1, after a CSV's header) and
    column of a key that is missing or empty, or an ``as_of`` that is not ms
    since the epoch (seconds are refused, as for events), ISO 8601 text or a
    timestamp (events.to_ms: no zone means UTC).
    """
    path = Path(data_dir) / table.path
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ConfigError(f"table '{table.name}': {path} is not .csv, .parquet or .json(l)")
    if not path.is_file():
        raise NotFound(f"table '{table.name}': no file {path}")
    try:
        rel = duckdb.sql(f"SELECT * FROM {reader}(?)", params=[str(path)])  # type: ignore[call-arg]
    except duckdb.Error as e:
        raise BadInput(f"table '{table.name}': cannot read {path}: {e}") from None
    if rel is None:
        raise BadInput(f"table '{table.name}': {path} is not a table")
    columns = list(rel.columns)
    for name in (table.key, table.as_of):
        if name is not None and name not in columns:
            raise BadInput(f"table '{table.name}': column '{name}' not in {path} "
                           f"(columns: {', '.join(columns)})")
    rows = [dict(zip(columns, row, strict=True)) for row in rel.fetchall()]
    for n, row in enumerate(rows, start=1):
        where = f"table '{table.name}', row {n}, column"
        if row[table.key] is None or row[table.key] == "":
            raise BadInput(f"{where} '{table.key}': missing (the key)")
        if table.as_of is not None:
            at = f"{where} '{table.as_of}'"
            row[table.as_of] = check_ms(to_ms(row[table.as_of], at), at)
    return rows
