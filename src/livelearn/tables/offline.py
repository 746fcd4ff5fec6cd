"""Offline tables: CSV, Parquet or JSON-lines files loaded with DuckDB into rows by key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from livelearn.errors import BadInput, ConfigError, NotFound
from livelearn.spec import Table

_READERS = {".csv": "read_csv_auto", ".parquet": "read_parquet", ".json": "read_json_auto",
            ".jsonl": "read_json_auto", ".ndjson": "read_json_auto"}


def load_table(table: Table, data_dir: str | Path = ".") -> dict[str, dict[str, Any]]:
    """Rows of ``table`` by the string value of its key column (the last row of a key wins)."""
    rows = read_rows(table, data_dir)
    return {str(row[table.key]): row for row in rows}


def read_rows(table: Table, data_dir: str | Path = ".") -> list[dict[str, Any]]:
    """Every row of ``table``'s file, in file order; checks that the key column exists."""
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
    return [dict(zip(columns, row, strict=True)) for row in rel.fetchall()]
