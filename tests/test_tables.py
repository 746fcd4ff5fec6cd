"""Offline tables from real files: ``as_of`` in every form a file holds it becomes ms; a bad
cell fails the load, naming the table, the row, the column and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from livelearn import spec
from livelearn.errors import BadInput
from livelearn.tables.asof import AsOfTable
from livelearn.tables.offline import load_table

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
])
def test_as_of_in_ms_iso_or_a_timestamp_is_read_as_ms(tmp_path: Path, name: str, text: str,
                                                       c1: int) -> None:
    table = _write(tmp_path, name, text)
    rows = load_table(table, tmp_path)
    assert {key: row["updated_at"] for key, row in rows.items()} == {"c0": T, "c1": c1}
    asof = AsOfTable.load(table, tmp_path)
    assert asof.get("c0", T - 1) == {} and asof.get("c0", T)["risk"] == "low"


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


def test_an_empty_key_is_refused_in_a_static_table_too(tmp_path: Path) -> None:
    (tmp_path / "items.jsonl").write_text('{"item_id":"i0","x":1}\n{"item_id":null,"x":2}\n')
    table = spec.Table("items", "items.jsonl", key="item_id")
    with pytest.raises(BadInput, match=r"^table 'items', row 2, column 'item_id': missing"):
        load_table(table, tmp_path)
