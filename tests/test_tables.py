"""Offline tables from real files: ``as_of`` in every form a file holds it becomes ms; a bad
cell fails the load, naming the table, the row, the column and the value."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import httpx
import orjson
import pytest

from conftest import ServerThread
from livelearn import spec
from livelearn.deploy.gate import Gate
from livelearn.errors import BadInput, NotFound
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.ftrl import FTRL
from livelearn.registry import Registry
from livelearn.serve.app import create_app
from livelearn.tables.asof import AsOfTable
from livelearn.tables.offline import load_table, read_rows
from livelearn.tables.store import check_row, open_store
from livelearn.train.trainer import Trainer

T = 1_703_980_800_000  # 2023-12-31T00:00:00Z

def _write(folder: Path, name: str, text: str) -> spec.Table:
    (folder / name).write_text(text)
    return spec.Table("cards", name, key="card_id", as_of="updated_at")


@pytest.mark.parametrize(("name", "text", "c1"), [
    ("ms.csv", f"card_id,updated_at,risk\nc0,{T},low\nc1,{T + 1000},high\n", T + 1000),
    ("iso.csv", "card_id,updated_at,risk\nc0,2023-12-31T00:00:00,low\n"
                "c1,2023-12-31T05:00:01+05:00,high\n", T + 1000),
    ("date.csv", "card_id,updated_at,risk\nc0,2023-12-31,low\nc1,2024-01-01,high\n",
     T + 86_400_000),
    ("text.jsonl", f'{{"card_id":"c0","updated_at":"{T}","risk":"low"}}\n'
                   f'{{"card_id":"c1","updated_at":"2023-12-31T00:00:01Z","risk":"high"}}\n',
     T + 1000),
    # as BigQuery exports a timestamp
    ("utc.csv", "card_id,updated_at,risk\nc0,2023-12-31 00:00:00 UTC,low\n"
                "c1,2023-12-31 00:00:01.000001 UTC,high\n", T + 1001),
    ("utc.jsonl", '{"card_id":"c0","updated_at":"2023-12-31 00:00:00 UTC","risk":"low"}\n'
                  '{"card_id":"c1","updated_at":"2023-12-31 00:00:01 UTC","risk":"high"}\n',
     T + 1000),
])
def test_as_of_in_ms_iso_or_a_timestamp_is_read_as_ms(tmp_path: Path, name: str, text: str,
                                                       c1: int) -> None:
    table = _write(tmp_path, name, text)
    rows = load_table(table, tmp_path)
    assert {key: row["updated_at"] for key, row in rows.items()} == {"c0": T, "c1": c1}
    asof = AsOfTable.load(table, tmp_path)
    assert asof.get("c0", T - 1) == {} and asof.get("c0", T)["risk"] == "low"


def test_a_date_before_1973_is_an_as_of_not_seconds(tmp_path: Path) -> None:
    """"1970-01-01" (a row valid since always) was refused as "got 0 (seconds?)": only a
    number may be seconds by mistake; a date is one whatever its year, as the docs say."""
    table = _write(tmp_path, "old.csv", "card_id,updated_at,risk\nc0,1970-01-01,low\n"
                                        "c0,2023-12-31T00:00:00Z,high\n"
                                        "c1,1900-01-01T00:00:00+00:00,low\n")
    asof = AsOfTable.load(table, tmp_path)
    assert asof.get("c0", T - 1)["risk"] == "low" and asof.get("c0", T)["risk"] == "high"
    assert asof.get("c1", T)["updated_at"] == -2_208_988_800_000
    store = open_store("memory://")  # where a server holds them
    store.replace_table("cards", {"c1": {-2_208_988_800_000: {"risk": "low"}}})
    assert store.get_rows("cards", ["c1"], as_of_ms=T) == {"c1": {"risk": "low"}}
    _write(tmp_path, "s.csv", f"card_id,updated_at,risk\nc0,{T // 1000},low\n")
    with pytest.raises(BadInput, match=r"got 1703980800 \(seconds\?\)"):  # a number still is
        AsOfTable.load(spec.Table("cards", "s.csv", key="card_id", as_of="updated_at"),
                       tmp_path)


def test_a_time_without_a_zone_is_utc_whatever_the_machines_zone(tmp_path: Path) -> None:
    """A column of times some with a zone and some without: DuckDB read those without in
    the machine's zone, so that in Kolkata a row valid from 00:00 UTC was valid from
    18:30 the day before, and seen by events before it."""
    _write(tmp_path, "iso.csv", "card_id,updated_at,risk\nc0,2023-12-31T00:00:00,low\n"
                                "c1,2023-12-31T05:00:01+05:00,high\n")
    code = ("from livelearn import spec; from livelearn.tables.offline import load_table; "
            "t = spec.Table('cards', 'iso.csv', key='card_id', as_of='updated_at'); "
            "print({k: r['updated_at'] for k, r in load_table(t).items()})")
    for zone in ("Asia/Kolkata", "America/New_York"):
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, env={**os.environ, "TZ": zone})
        assert done.stdout.strip() == str({"c0": T, "c1": T + 1000}), done.stderr


def test_dates_times_and_decimals_are_json_scalars_as_the_server_stores_them(
        tmp_path: Path) -> None:
    """The joiner handed features a datetime.date where the server refused to load the
    table (its store holds JSON scalars): both now see ISO 8601 text, and a float."""
    duckdb.sql(f"COPY (SELECT 'c1' AS card_id, DATE '2020-05-01' AS opened, TIMESTAMP "
               f"'2020-05-01 10:00:00' AS seen, TIMESTAMPTZ '2020-05-01 10:00:00+02' AS paid, "
               f"12.50::DECIMAL(10, 2) AS credit, TIME '10:00:00' AS cutoff) TO "
               f"'{tmp_path / 'cards.parquet'}' (FORMAT parquet)")
    table = spec.Table("cards", "cards.parquet", key="card_id")
    row = load_table(table, tmp_path)["c1"]
    assert row == {"card_id": "c1", "opened": "2020-05-01", "seen": "2020-05-01T10:00:00",
                   "paid": "2020-05-01T08:00:00+00:00", "credit": 12.5, "cutoff": "10:00:00"}
    assert check_row("cards", "c1", row) == row


def test_timestamps_and_times_in_nanoseconds_are_iso_text_too(tmp_path: Path) -> None:
    """pandas writes a time-zone-aware datetime column to Parquet in nanoseconds with its
    zone (TIMESTAMPTZ_NS to DuckDB), and pyarrow a time64("ns") column as TIME_NS: the
    load failed ("expected text, a number, a bool or nothing ..., got datetime...")."""
    duckdb.sql(f"COPY (SELECT 'c1' AS card_id, TIMESTAMPTZ_NS '2020-05-01 10:00:00.0015+02' "
               f"AS paid, TIME_NS '10:00:00.000004' AS cutoff) TO "
               f"'{tmp_path / 'cards.parquet'}' (FORMAT parquet)")
    table = spec.Table("cards", "cards.parquet", key="card_id")
    row = load_table(table, tmp_path)["c1"]
    assert row == {"card_id": "c1", "paid": "2020-05-01T08:00:00.001500+00:00",
                   "cutoff": "10:00:00.000004"}
    assert AsOfTable.load(table, tmp_path).get("c1", T) == row


@pytest.mark.parametrize(("text", "message"), [
    (f"c0,{T},low\nc1,{T},low\nc2,17039808OOOOO,low\n",
     "table 'cards', row 3, column 'updated_at': expected milliseconds since the epoch or "
     "ISO 8601, got '17039808OOOOO'"),
    ("c0,2023-12-31T00:00:00,low\nc1,yesterday,low\n",
     "table 'cards', row 2, column 'updated_at': expected milliseconds since the epoch or "
     "ISO 8601, got 'yesterday'"),
    ("c0,1703980800,low\n",
     "table 'cards', row 1, column 'updated_at': expected milliseconds since the epoch, "
     "got 1703980800 (seconds?)"),
    ("c0,1703980800000000,low\n",  # each row valid from the year 55,970: never joined
     "table 'cards', row 1, column 'updated_at': expected milliseconds since the epoch, "
     "got 1703980800000000, far in the future, after the year 9999 (microseconds or "
     "nanoseconds?)"),
    # a date and time written as digits: as ms, rows valid from 1976 (seen by every event
    # before their time) or from the year 2611 (never seen), in silence
    ("c0,202312311030,low\n",
     "table 'cards', row 1, column 'updated_at': 202312311030 reads as 2023-12-31T10:30:00 "
     "written as digits (YYYYMMDDhhmm), not milliseconds since the epoch: write it as ISO "
     "8601 text (2023-12-31T10:30:00Z) or ms"),
    (f"c0,{T},low\nc1,20231231103000,low\n",
     "table 'cards', row 2, column 'updated_at': 20231231103000 reads as 2023-12-31T10:30:00 "
     "written as digits (YYYYMMDDhhmmss), not milliseconds since the epoch: write it as ISO "
     "8601 text (2023-12-31T10:30:00Z) or ms"),
    ("c0,20231231,low\n",  # not "(seconds?)"
     "table 'cards', row 1, column 'updated_at': 20231231 reads as 2023-12-31T00:00:00 "
     "written as digits (YYYYMMDD), not milliseconds since the epoch: write it as ISO 8601 "
     "text (2023-12-31T00:00:00Z) or ms"),
    (f"c0,{T},low\nc1,,low\n",
     "table 'cards', row 2, column 'updated_at': expected integer milliseconds since the "
     "epoch, got None"),
    (f"c0,{T},low\n,{T},low\n",
     "table 'cards', row 2, column 'card_id': missing (the key)"),
])
def test_a_bad_cell_names_its_row_column_and_value(tmp_path: Path, text: str,
                                                   message: str) -> None:
    table = _write(tmp_path, "cards.csv", "card_id,updated_at,risk\n" + text)
    for load in (AsOfTable.load, load_table):
        with pytest.raises(BadInput) as e:
            load(table, tmp_path)
        assert str(e.value) == message


def test_a_date_written_as_digits_in_a_json_or_parquet_table_is_refused(
        tmp_path: Path) -> None:
    """A column of integers YYYYMMDDhhmmss, from a warehouse: rows valid from the year 2611,
    never seen by any event, in silence. A time in ms of 1976 whose digits are no date
    loads."""
    (tmp_path / "cards.jsonl").write_text(
        '{"card_id": "c1", "updated_at": 20231231103000, "risk": "low"}\n')
    duckdb.sql(f"COPY (SELECT 'c1' AS card_id, 202312311030 AS updated_at, 'low' AS risk) TO "
               f"'{tmp_path / 'cards.parquet'}' (FORMAT parquet)")
    for name in ("cards.jsonl", "cards.parquet"):
        table = spec.Table("cards", name, key="card_id", as_of="updated_at")
        with pytest.raises(BadInput, match="row 1, column 'updated_at': 2023123110300?0? reads "
                                           "as 2023-12-31T10:30:00 written as digits"):
            read_rows(table, tmp_path)
    table = _write(tmp_path, "cards.csv", "card_id,updated_at,risk\nc1,200000000000,low\n")
    assert [r["updated_at"] for r in read_rows(table, tmp_path)] == [200000000000]


def test_an_empty_key_is_refused_in_a_static_table_too(tmp_path: Path) -> None:
    (tmp_path / "items.jsonl").write_text('{"item_id":"i0","x":1}\n{"item_id":null,"x":2}\n')
    table = spec.Table("items", "items.jsonl", key="item_id")
    with pytest.raises(BadInput, match=r"^table 'items', row 2, column 'item_id': missing"):
        load_table(table, tmp_path)


def test_a_table_file_without_rows_is_empty_or_named(tmp_path: Path) -> None:
    """DuckDB reads JSON that holds no object as one column 'json': an empty file or []
    failed with "column 'item_id' not in items.json (columns: json)", a column the file
    does not have; they are a table of no rows, as a CSV file of its header only is."""
    table = spec.Table("items", "items.json", key="item_id")
    for text in ("", "[]", "\n"):
        (tmp_path / "items.json").write_text(text)
        assert load_table(table, tmp_path) == {}
        assert AsOfTable.load(table, tmp_path).get("i1", T) == {}
    for text in ("", "\n\n"):  # a CSV file has a header at least
        (tmp_path / "items.csv").write_text(text)
        with pytest.raises(BadInput) as e:
            load_table(spec.Table("items", "items.csv", key="item_id"), tmp_path)
        assert str(e.value) == (f"table 'items': cannot read {tmp_path / 'items.csv'}: the "
                                f"file is empty: no header naming the key column 'item_id'")
    (tmp_path / "items.json").write_text("[1, 2]")
    with pytest.raises(BadInput) as e:
        load_table(table, tmp_path)
    assert str(e.value) == (f"table 'items': {tmp_path / 'items.json'} holds JSON values that "
                            f"are not objects; a table's rows are objects "
                            f"({{\"item_id\": ...}}), one a line or in one array")


def test_a_csv_header_whose_names_read_as_values_is_the_header(tmp_path: Path) -> None:
    """A CSV table has a header: DuckDB guessed there was none where the header's names
    read as the column's values ("t" a bool, "2024" an integer), so a file of its header
    only, "id,t", failed with DuckDB's "Columns with names: "id" do not exist", and a
    header "flag,t" over a column of booleans likewise."""
    for text, key, as_of, rows in [
            ("id,t\n", "id", "t", []),
            ("user,t\nu1,true\nu2,false\n", "user", None,
             [{"user": "u1", "t": True}, {"user": "u2", "t": False}]),
            ("item,2024\ni1,7\n", "item", None, [{"item": "i1", "2024": 7}]),
            ("\nitem,2024\ni1,7\n", "item", None, [{"item": "i1", "2024": 7}])]:
        (tmp_path / "t.csv").write_text(text)
        assert read_rows(spec.Table("t", "t.csv", key=key, as_of=as_of), tmp_path) == rows


@pytest.mark.parametrize(("folder", "other"), [("data[1]", "data1"), ("a*b", "a-b"),
                                               ("v?", "v2")])
def test_a_tables_folder_whose_name_duckdb_reads_as_a_pattern_is_read_as_named(
        tmp_path: Path, folder: str, other: str) -> None:
    """DuckDB reads a path as a pattern of file names: with --data data[1], the table was
    read from data1/ in silence, and with a*b from both a*b/ and a-b/ (each key twice)."""
    for name, risk in ((folder, "real"), (other, "other")):
        (tmp_path / name).mkdir()
        for suffix in ("csv", "jsonl"):
            (tmp_path / name / f"cards.{suffix}").write_text(
                f"card_id,risk\nc1,{risk}\n" if suffix == "csv"
                else f'{{"card_id": "c1", "risk": "{risk}"}}\n')
        duckdb.sql(f"COPY (SELECT 'c1' AS card_id, '{risk}' AS risk) TO "
                   f"'{tmp_path / name / 'cards.parquet'}' (FORMAT parquet)")
    for suffix in ("csv", "jsonl", "parquet"):
        table = spec.Table("cards", f"cards.{suffix}", key="card_id")
        assert load_table(table, tmp_path / folder) == {"c1": {"card_id": "c1", "risk": "real"}}


def test_a_value_the_online_store_cannot_hold_fails_the_load(tmp_path: Path) -> None:
    """A list or an object in a table: the joiner (replay) took it and learned from it,
    then `livelearn serve` refused the table at start ("expected a string name and a JSON
    scalar"): the server, the joiner and ingest read the same rows, or none."""
    (tmp_path / "items.jsonl").write_text('{"item_id":"i1","tags":["a","b"]}\n')
    (tmp_path / "shops.jsonl").write_text('{"id":"s1","x":null}\n{"id":"s2","x":{"k":1}}\n')
    rel = f"read_json_auto('{tmp_path / 'items.jsonl'}')"
    duckdb.sql(f"COPY (SELECT * FROM {rel}) TO '{tmp_path / 'items.parquet'}' (FORMAT parquet)")
    for name, key, row, column, value in [
            ("items.jsonl", "item_id", 1, "tags", "['a', 'b']"),
            ("items.parquet", "item_id", 1, "tags", "['a', 'b']"),
            ("shops.jsonl", "id", 2, "x", "{'k': 1}")]:
        table = spec.Table("t", name, key=key)
        for load in (AsOfTable.load, load_table):
            with pytest.raises(BadInput) as e:
                load(table, tmp_path)
            assert str(e.value) == (f"table 't', row {row}, column '{column}': expected text, "
                                    f"a number, a bool or nothing (what the servers' online "
                                    f"store holds), got {value}")


@pytest.mark.parametrize(("name", "text", "row", "value"), [
    ("wide.jsonl", '{"id":"a","n":1.5}\n{"id":"b","n":123456789012345678901234}\n', 2,
     "123456789012345678901234"),
    ("mixed.jsonl", '{"id":"a","n":"x"}\n{"id":"b","n":-9223372036854775809}\n', 2,
     "-9223372036854775809"),
    ("unsigned.parquet", "SELECT 'a' AS id, 18446744073709551615::UBIGINT AS n", 1,
     "18446744073709551615"),
])
def test_an_integer_beyond_64_bits_fails_the_load_naming_its_row(
        tmp_path: Path, name: str, text: str, row: int, value: str) -> None:
    """DuckDB reads a JSON integer beyond 64 bits as a float (123456789012345678901234
    became 1.2345678901234569e+23, in silence), and a Parquet one as an integer that the
    online store cannot hold, refused as "expected text, a number, ..."."""
    if name.endswith(".parquet"):
        duckdb.sql(f"COPY ({text}) TO '{tmp_path / name}' (FORMAT parquet)")
    else:
        (tmp_path / name).write_text(text)
    with pytest.raises(BadInput) as e:
        load_table(spec.Table("t", name, key="id"), tmp_path)
    assert str(e.value) == (f"table 't', row {row}, column 'n': {value} is an integer of "
                            f"more than 64 bits, which the online store does not hold "
                            f"exactly: write it as text (\"{value}\")")
    (tmp_path / "fits.jsonl").write_text('{"id":"a","n":-9223372036854775808,"f":1e300}\n'
                                         '{"id":"b","n":9223372036854775807,"f":2.5}\n')
    rows = load_table(spec.Table("t", "fits.jsonl", key="id"), tmp_path)
    assert [(r["n"], r["f"]) for r in rows.values()] == [(-(2**63), 1e300), (2**63 - 1, 2.5)]


def test_a_csv_column_of_integers_beyond_64_bits_is_text_kept_exact(tmp_path: Path) -> None:
    """A CSV cell cannot say it is text (DuckDB reads "18446744073709551616" in quotes as
    a number too), so a column of integers beyond 64 bits, which the online store holds
    no number of, is the text of its cells; it was refused as "expected text, a number,
    ...", which its cells were."""
    (tmp_path / "wide.csv").write_text('id,n,m,k\na,1,18446744073709551615,1\n'
                                       'b,"18446744073709551616",2,2\n')
    rows = load_table(spec.Table("t", "wide.csv", key="id"), tmp_path)
    assert [(r["n"], r["m"], r["k"]) for r in rows.values()] == [
        ("1", "18446744073709551615", 1), ("18446744073709551616", "2", 2)]


def test_a_byte_order_mark_inside_a_csv_table_fails_the_load_naming_its_line(
        tmp_path: Path) -> None:
    """Two files joined (cat a.csv b.csv): the second one's BOM and header became a row of
    key "\\ufeffitem_id", and column x text ("1", "x", "2") where it held integers."""
    (tmp_path / "items.csv").write_bytes(b"\xef\xbb\xbfitem_id,x\ni1,1\n"
                                         b"\xef\xbb\xbfitem_id,x\ni2,2\n")
    with pytest.raises(BadInput) as e:
        load_table(spec.Table("items", "items.csv", key="item_id"), tmp_path)
    assert str(e.value) == (f"table 'items': {tmp_path / 'items.csv'} line 3 holds a byte "
                            f"order mark (U+FEFF), which only a file's start may hold: two "
                            f"files joined into one? Remove it")


def test_keys_match_as_text_whatever_type_the_file_gives_them(tmp_path: Path) -> None:
    """A JSON key column of integers and unicode text (DuckDB gives such a column as JSON
    text: '"zoë"') and a CSV key column that looks numeric ("007", "1e3") are looked up by
    the text a request names them with; a mixed column's values are what the file holds."""
    (tmp_path / "users.jsonl").write_text(
        '{"user_id": 10, "plan": "pro", "price": 3}\n'
        '{"user_id": "zoë", "plan": null, "price": "n/a"}\n'
        '{"user_id": "用户", "plan": "free"}\n', encoding="utf-8")
    (tmp_path / "items.csv").write_text("item_id,n\n1,1\n007,2\n1e3,3\n")
    users = spec.Table("users", "users.jsonl", key="user_id")
    items = spec.Table("items", "items.csv", key="item_id")
    rows = load_table(users, tmp_path)
    assert {k: (r["plan"], r.get("price")) for k, r in rows.items()} == {
        "10": ("pro", 3), "zoë": (None, "n/a"), "用户": ("free", None)}
    assert AsOfTable.load(users, tmp_path).get("zoë", T)["price"] == "n/a"
    assert {k: r["n"] for k, r in load_table(items, tmp_path).items()} == {
        "1": 1, "007": 2, "1e3": 3}


def test_a_float_key_or_a_key_twice_in_a_static_table_is_refused(tmp_path: Path) -> None:
    """1.0 (pandas writes an integer column with a gap so) never matches "1"; a second row
    of a key would silently replace the first."""
    (tmp_path / "f.jsonl").write_text('{"item_id": 1.0}\n{"item_id": 2.5}\n')
    (tmp_path / "d.csv").write_text("item_id,x\n1,a\n2,b\n1,c\n")
    float_key = spec.Table("items", "f.jsonl", key="item_id")
    twice = spec.Table("items", "d.csv", key="item_id")
    for load in (AsOfTable.load, load_table):
        with pytest.raises(BadInput) as e:
            load(float_key, tmp_path)
        assert str(e.value) == ("table 'items', row 1, column 'item_id': expected text or an "
                                "integer (the key), got 1.0 (float), which no request's key "
                                "would match")
        with pytest.raises(BadInput) as e:
            load(twice, tmp_path)
        assert str(e.value) == ("table 'items', rows 1 and 3, column 'item_id': the key '1' "
                                "twice; a table without as_of holds one row per key")


def test_a_csv_row_with_too_many_cells_is_named_by_its_line(tmp_path: Path) -> None:
    """DuckDB's sniffer gives up on such a file (or reads it as one column): the error says
    which line, counting blank lines and newlines in quotes, and the header's spaces and BOM
    are no part of the names."""
    (tmp_path / "items.csv").write_text('\ufeff item_id , genre\ni1,"dra\nma"\n\ni2,b,c,d\n',
                                        encoding="utf-8")
    with pytest.raises(BadInput) as e:
        load_table(spec.Table("items", "items.csv", key="item_id"), tmp_path)
    assert str(e.value) == (f"table 'items': cannot read {tmp_path / 'items.csv'}: line 5 has "
                            f"4 cells, the header 2")
    with pytest.raises(BadInput, match=r"column 'id' not in the header \(columns: item_id, "):
        load_table(spec.Table("items", "items.csv", key="id"), tmp_path)


def test_a_csv_table_without_its_as_of_column_names_it(tmp_path: Path) -> None:
    """Before: "Binder Error: COLUMN_TYPES error: Columns with names: "updated" do not exist
    in the CSV File", DuckDB's words for it."""
    (tmp_path / "users.csv").write_text("user_id,updated_at,plan\nu1,2024-01-01,free\n")
    with pytest.raises(BadInput) as e:
        load_table(spec.Table("users", "users.csv", key="user_id", as_of="updated"), tmp_path)
    assert str(e.value) == (f"table 'users': cannot read {tmp_path / 'users.csv'}: column "
                            f"'updated' (as_of) not in the header (columns: user_id, "
                            f"updated_at, plan)")


def _v1_approved(log: SQLiteLog, pipeline: spec.Pipeline, registry_dir: Path) -> Registry:
    """The Registry in ``registry_dir`` with ``pipeline``'s untrained v1 approved, its
    topics made in ``log``: what a server needs to start."""
    for topic in pipeline.topics:
        log.create_topic(topic)
    registry = Registry(registry_dir)
    Trainer(log, registry, pipeline)
    Gate(log, registry, pipeline.target, pipeline.policies.gate_tolerance).step()
    return registry


def test_the_server_finds_a_unicode_user_of_a_json_table_whose_keys_are_mixed(
        tmp_path: Path, log: SQLiteLog) -> None:
    """Over HTTP: /predict for "zoë" serves (and logs) her row, not an unknown user's."""
    (tmp_path / "users.json").write_text(
        '[{"user_id": 10, "plan": "pro"}, {"user_id": "zoë", "plan": "free"}]',
        encoding="utf-8")
    (tmp_path / "items.csv").write_text("item_id,category\n007,toys\n")
    pipeline = spec.Pipeline(
        name="mixed", feedback=spec.FeedbackJoin(
            streams=(spec.Stream("clicks", {"request_id": str}, key="user"),),
            window_ms=60_000, label=lambda events: {"clicked": float(bool(events))}),
        users=spec.Table("users", "users.json", key="user_id"),
        items=spec.Table("items", "items.csv", key="item_id"),
        features=lambda user, item, ts: {"plan": str(user.get("plan", "unknown")),
                                         "category": str(item.get("category", "unknown"))},
        learner=lambda: FTRL(bits=10), target="clicked")
    registry = _v1_approved(log, pipeline, tmp_path / "registry")
    app = create_app(pipeline, log, registry, tmp_path, poll_s=0.02)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        for user in ("zoë", "10"):
            answer = http.post("/predict", json={"user_id": user, "items": ["007"], "ts": T})
            assert answer.status_code == 200, answer.text
    served = [orjson.loads(r.value) for r in log.read("predictions", 0, 0, 10)]
    assert [(p["user"], p["features"]) for p in served] == [
        ("zoë", {"plan": "free", "category": "toys"}), ("10", {"plan": "pro", "category": "toys"})]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_server_restarted_on_the_same_store_serves_the_files_rows_only(
        tmp_path: Path, log: SQLiteLog, request: pytest.FixtureRequest, backend: str) -> None:
    """An item deleted from items.csv, a version of one taken out and a user deleted from
    users.csv: the server restarted on the same store served them still (its load only
    added rows) where the joiner, reading the files, knows none of them."""
    (tmp_path / "users.csv").write_text("user_id,plan\nu1,pro\nu2,free\n")
    (tmp_path / "items.csv").write_text(f"item_id,updated_at,x\ni1,{T - 1000},1\n"
                                        f"i1,{T + 5},2\ni2,{T - 1000},3\n")
    pipeline = spec.Pipeline(
        name="restarted", feedback=spec.FeedbackJoin(
            streams=(spec.Stream("clicks", {"request_id": str}, key="user"),),
            window_ms=60_000, label=lambda events: {"clicked": float(bool(events))}),
        users=spec.Table("users", "users.csv", key="user_id"),
        items=spec.Table("items", "items.csv", key="item_id", as_of="updated_at"),
        features=lambda user, item, ts: {"plan": str(user.get("plan")),
                                         "x": float(item.get("x") or 0)},
        learner=lambda: FTRL(bits=10), target="clicked")
    registry = _v1_approved(log, pipeline, tmp_path / "registry")
    url = (f"memory://restarted{uuid.uuid4().hex}" if backend == "memory" else
           f"redis://{request.getfixturevalue('redis_address')}/0?namespace=t{uuid.uuid4().hex}")

    def serve(user: str, items: list[str]) -> tuple[int, list[dict[str, object]]]:
        """The status and the features served, by a server started now on ``url``."""
        store = open_store(url)
        app = create_app(pipeline, log, registry, tmp_path, store=store, poll_s=0.02)
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=10) as h:
            reply = h.post("/predict", json={"user_id": user, "items": items, "ts": T + 10})
        store.close()
        if reply.status_code != 200:
            return reply.status_code, [reply.json()]
        end = log.end_offset("predictions", 0)
        served = [orjson.loads(r.value) for r in log.read("predictions", 0, end - len(items),
                                                           len(items))]
        return 200, [p["features"] for p in served]

    try:
        assert serve("u2", ["i1", "i2"]) == (200, [{"plan": "free", "x": 2.0},
                                                   {"plan": "free", "x": 3.0}])
        (tmp_path / "users.csv").write_text("user_id,plan\nu1,pro\n")
        (tmp_path / "items.csv").write_text(f"item_id,updated_at,x\ni1,{T - 1000},1\n"
                                            f"i3,{T - 1000},4\n")
        status, body = serve("u2", ["i2"])
        assert status == 422 and "item 'i2' is not in table 'items'" in str(body)
        assert serve("u2", ["i1", "i3"]) == (200, [{"plan": "None", "x": 1.0},
                                                   {"plan": "None", "x": 4.0}])
    finally:
        store = open_store(url)
        store.clear()
        store.close()


def test_a_nan_in_a_table_is_a_missing_value(tmp_path: Path) -> None:
    """Parquet from pandas holds NaN for a missing number: the row says None, as for an
    empty CSV cell, so that `features` never passes a NaN on unawares."""
    (tmp_path / "src.jsonl").write_text('{"item_id":"i1","price":1.5}\n'
                                        '{"item_id":"i2","price":"NaN"}\n')
    duckdb.sql(f"COPY (SELECT item_id, CAST(price AS DOUBLE) AS price FROM "
               f"read_json_auto('{tmp_path / 'src.jsonl'}')) TO '{tmp_path / 'items.parquet'}' "
               f"(FORMAT parquet)")
    (tmp_path / "items.csv").write_text("item_id,price\ni1,1.5\ni2,NaN\ni3,\n")
    for name in ("items.parquet", "items.csv"):
        rows = load_table(spec.Table("items", name, key="item_id"), tmp_path)
        assert {k: r["price"] for k, r in rows.items() if k != "i3"} == {"i1": 1.5, "i2": None}


def test_an_infinite_number_in_a_table_fails_the_load_naming_its_row(tmp_path: Path) -> None:
    """Infinity in a JSON line or a Parquet float column: the joiner (replay) took it and
    learned from it, then `livelearn serve` refused the table at start, naming no row (the
    online store holds finite floats only): the server, the joiner and ingest read the
    same rows, or none."""
    (tmp_path / "items.jsonl").write_text('{"item_id":"i1","price":1.5}\n'
                                          '{"item_id":"i2","price":-Infinity}\n')
    duckdb.sql(f"COPY (SELECT * FROM read_json_auto('{tmp_path / 'items.jsonl'}')) TO "
               f"'{tmp_path / 'items.parquet'}' (FORMAT parquet)")
    for name in ("items.jsonl", "items.parquet"):
        table = spec.Table("items", name, key="item_id")
        for load in (AsOfTable.load, load_table):
            with pytest.raises(BadInput) as e:
                load(table, tmp_path)
            assert str(e.value) == ("table 'items', row 2, column 'price': expected a finite "
                                    "number, got -inf (the online store holds finite floats "
                                    "only: write a missing value as null)")


def test_a_missing_table_file_is_named_with_the_folder_it_was_looked_for_in(
        tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=(f"table 'users': no file data/users.csv in {tmp_path} "
                                        r"\(the tables' folder: --data")):
        load_table(spec.Table("users", "data/users.csv", key="user"), tmp_path)


def test_a_column_takes_its_type_from_all_its_values(tmp_path: Path) -> None:
    """DuckDB took a column's type from the first 20,480 rows: a 2.5 after 30,000 integers
    was read as 3 from a CSV file and as 2 from a JSON one, in silence, and a text after
    30,000 numbers failed the load; the type is now every value's (docs/own-data.md: a
    column with any text in it is text in every row)."""
    numbers = "".join(f"c{i},{i}\n" for i in range(30_000))
    (tmp_path / "cards.csv").write_text("card_id,n\n" + numbers + "c_last,2.5\n")
    (tmp_path / "cards.jsonl").write_text("".join(f'{{"card_id":"c{i}","n":{i}}}\n'
                                                  for i in range(30_000))
                                          + '{"card_id":"c_last","n":2.5}\n')
    (tmp_path / "shops.csv").write_text("card_id,country\n" + numbers + "c_last,US\n")
    for name, column, last, first in [("cards.csv", "n", 2.5, 0.0), ("cards.jsonl", "n", 2.5, 0.0),
                                      ("shops.csv", "country", "US", "0")]:
        table = spec.Table("cards", name, key="card_id")
        joiners, servers = AsOfTable.load(table, tmp_path), load_table(table, tmp_path)
        for rows in ({k: joiners.get(k, T) for k in ("c_last", "c0")}, servers):
            assert (rows["c_last"][column], rows["c0"][column]) == (last, first), name


def test_a_large_table_says_it_is_read_and_how_long_it_took(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
        ) -> None:
    """A table of 2 million rows (70 MB) took 90 s to read, and nothing said so: the joiner
    or server seemed to hang. Its rows' as_of, the same text in every row of a snapshot,
    is parsed once per text (the 90 s: 25), each row still its own time."""
    from livelearn.tables import offline

    monkeypatch.setattr(offline, "LARGE", 1)  # every table is large here
    caplog.set_level(logging.INFO, logger="livelearn.tables")
    (tmp_path / "cards.csv").write_text(
        "card_id,updated_at,risk\nc1,2024-01-01T00:00:00,low\nc2,2024-01-01T00:00:00,high\n"
        "c1,2024-01-02T00:00:00.0000001,high\nc1,2024-01-01T00:00:00,low\n")
    rows = read_rows(spec.Table("cards", "cards.csv", key="card_id", as_of="updated_at"),
                     tmp_path)
    day = T + 86_400_000  # 2024-01-01
    assert [row["updated_at"] for row in rows] == [day, day, day + 86_400_001, day]
    said = [r.getMessage() for r in caplog.records]
    assert said[0] == f"table 'cards': reading {tmp_path / 'cards.csv'} (0 MB)"
    assert said[1].startswith("table 'cards': 4 rows read in ")


def test_a_large_table_says_it_is_indexed_and_how_long_it_took(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
        ) -> None:
    """A table of 2 million rows, once read, was sorted and indexed by key and as_of for
    20 s more, and nothing said so: the joiner seemed to hang. Now that is said when it
    starts and ends, for a large table only; its rows are as of their times as before."""
    import gc
    import re

    from livelearn.tables import asof

    monkeypatch.setattr(asof, "LARGE_ROWS", 4)  # tables of 4 rows are large here
    caplog.set_level(logging.INFO, logger="livelearn.tables")
    (tmp_path / "cards.csv").write_text(
        f"card_id,at,risk\nc1,{T + 2},high\nc2,{T + 1},low\nc1,{T + 1},low\nc1,{T + 2},mid\n")
    (tmp_path / "few.csv").write_text(f"card_id,at,risk\nc1,{T + 2},high\nc2,{T + 1},low\n")
    AsOfTable.load(spec.Table("few", "few.csv", key="card_id", as_of="at"), tmp_path)
    assert caplog.records == []
    table = AsOfTable.load(spec.Table("cards", "cards.csv", key="card_id", as_of="at"),
                           tmp_path)
    said = [r.getMessage() for r in caplog.records]
    assert said[0] == "table 'cards': indexing 4 rows by key and as_of"
    assert re.fullmatch(r"table 'cards': 4 rows indexed \(2 keys\) in \d+\.\d s", said[1])
    assert [table.get("c1", ts).get("risk") for ts in (T, T + 1, T + 2, T + 3)] == \
        [None, "low", "mid", "mid"]  # of two rows of one time, the last in the file
    assert table.get("c2", T + 1) == {"card_id": "c2", "at": T + 1, "risk": "low"}
    # the garbage collector, paused while the rows are made, runs again after
    (tmp_path / "bad.csv").write_text(f"card_id,at\nc1,{T}\n,{T}\n")
    with pytest.raises(BadInput):
        AsOfTable.load(spec.Table("bad", "bad.csv", key="card_id", as_of="at"), tmp_path)
    assert gc.isenabled()
