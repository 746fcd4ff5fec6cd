"""Point-in-time correctness: tables and counters give values as of each event's
time, never from its future, checked against a plain batch computation."""

from __future__ import annotations

import bisect
import csv
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pytest

from livelearn import spec
from livelearn.errors import ConfigError
from livelearn.events import Event
from livelearn.features.counters import WindowCounter
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.ftrl import FTRL
from livelearn.registry import Registry
from livelearn.replay import replay
from livelearn.serve.counters import ServedCounters
from livelearn.serve.scoring import EventScorer
from livelearn.serve.tables import ServedTables
from livelearn.tables.asof import AsOfTable
from livelearn.tables.store import open_store

T0 = 1_704_067_200_000
WINDOW = 60_000

CLICKS = spec.Stream("views", {"item": str, "y": float}, key="user", id="id")
PRICES = spec.Table("prices", "prices.csv", key="item", as_of="updated_at")


def features(event: Event, rows: Mapping[str, Mapping[str, Any]],
             counts: Mapping[str, int]) -> dict[str, Any]:
    row = rows["prices"]
    return {"since": float(row.get("updated_at", -1)), "price": float(row.get("price", -1)),
            "user_views": float(counts["user_views"]), "item_views": float(counts["item_views"])}


PIPELINE = spec.Pipeline(
    name="pit", feedback=spec.EventLabel(CLICKS, label="y"),
    lookups=(spec.Lookup(PRICES, on="item"),),
    counters=(spec.WindowCount("user_views", "views", WINDOW),
              spec.WindowCount("item_views", "views", WINDOW, by="item")),
    features=features, learner=lambda: FTRL(bits=12), target="y",
    policies=spec.Policies(publish_every_samples=10**9, publish_every_ms=10**12))


def _history(tmp: Path, rng: random.Random) -> tuple[dict[str, list[tuple[int, float]]],
                                                      list[dict[str, Any]]]:
    prices: dict[str, list[tuple[int, float]]] = {}
    with open(tmp / "prices.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item", "updated_at", "price"])
        for i in range(5):
            times = sorted(rng.sample(range(T0, T0 + 600_000, 1000), 6))
            prices[f"i{i}"] = [(t, float(t - T0)) for t in times]
            for t, p in prices[f"i{i}"]:
                w.writerow([f"i{i}", t, p])
    # events land on, just before and just after the times of change
    change_times = [t for rows in prices.values() for t, _ in rows]
    times = sorted(rng.choice([t, t - 1, t + 1, rng.randrange(T0, T0 + 700_000)])
                   for t in change_times * 20)
    events = [{"id": f"e{n}", "user": f"u{rng.randrange(4)}", "item": f"i{rng.randrange(5)}",
               "ts": t, "y": float(rng.random() < 0.3)} for n, t in enumerate(times)]
    with open(tmp / "views.jsonl", "wb") as f:
        f.writelines(orjson.dumps(e) + b"\n" for e in events)
    return prices, events


def test_replay_never_sees_a_later_value(tmp_path: Path) -> None:
    prices, events = _history(tmp_path, random.Random(3))
    log = SQLiteLog(tmp_path / "log.db")
    report, _ = replay(log, Registry(tmp_path / "reg"), PIPELINE,
                       [("views", str(tmp_path / "views.jsonl"))], data_dir=tmp_path)
    samples = [orjson.loads(r.value) for r in log.read("samples", 0, 0, 10**6)]
    assert report["samples"] == len(samples) == len(events)
    by_id = {e["id"]: e for e in events}
    for s in samples:
        e = by_id[s["id"]]
        history = prices[e["item"]]
        i = bisect.bisect_right([t for t, _ in history], e["ts"]) - 1
        expected = float(history[i][0]) if i >= 0 else -1.0
        assert s["features"]["since"] == expected <= s["ts"], (s, history)
        earlier = [x for x in events if e["ts"] - WINDOW <= x["ts"] < e["ts"]]
        assert s["features"]["user_views"] == sum(x["user"] == e["user"] for x in earlier)
        assert s["features"]["item_views"] == sum(x["item"] == e["item"] for x in earlier)
    assert [s["ts"] for s in samples] == sorted(s["ts"] for s in samples)


def test_a_row_valid_from_within_a_millisecond_is_not_seen_before_it(tmp_path: Path) -> None:
    # a timestamp in microseconds (as pandas and Parquet write them): the row changes
    # 0.5 ms after the event at T0 + 60,000 ms, which must see the row before
    (tmp_path / "prices.csv").write_text("item,updated_at,price\n"
                                         "i0,2024-01-01T00:00:00,1\n"
                                         "i0,2024-01-01T00:01:00.000500,2\n")
    events = [{"id": f"e{n}", "user": "u0", "item": "i0", "ts": T0 + 60_000 + n, "y": 1.0}
              for n in range(2)]
    with open(tmp_path / "views.jsonl", "wb") as f:
        f.writelines(orjson.dumps(e) + b"\n" for e in events)
    log = SQLiteLog(tmp_path / "log.db")
    replay(log, Registry(tmp_path / "reg"), PIPELINE,
           [("views", str(tmp_path / "views.jsonl"))], data_dir=tmp_path)
    samples = [orjson.loads(r.value) for r in log.read("samples", 0, 0, 10)]
    assert [(s["id"], s["features"]["price"]) for s in samples] == [("e0", 1.0), ("e1", 2.0)]


@pytest.mark.parametrize("kind", ["TIMESTAMP_NS", "TIMESTAMPTZ_NS"])
def test_a_row_valid_from_within_a_microsecond_is_not_seen_before_it(tmp_path: Path,
                                                                     kind: str) -> None:
    """A time in nanoseconds (Parquet from pandas): DuckDB hands Python a datetime in
    microseconds, so a row valid from 0.5 us after 00:01:00.001 was read as valid from
    00:01:00.001 and seen by the event at that ms, before its time."""
    duckdb.sql(f"COPY (SELECT * FROM (VALUES ('i0', '2024-01-01 00:00:00'::{kind}, 1), "
               f"('i0', '2024-01-01 00:01:00.0010005'::{kind}, 2)) v(item, updated_at, "
               f"price)) TO '{tmp_path / 'prices.parquet'}' (FORMAT parquet)")
    table = replace(PRICES, path="prices.parquet")
    prices = AsOfTable.load(table, tmp_path)
    assert [prices.get("i0", T0 + 60_000 + n)["price"] for n in (0, 1, 2)] == [1, 1, 2]


def _row_with_the_price_seen(event: Event, rows: Mapping[str, Any],
                             counts: Mapping[str, int]) -> dict[str, Any]:
    """A features function that makes its features of the row it is given, in place."""
    row = rows["prices"]
    row.setdefault("price", -1.0)  # an item with no row yet
    row["seen"] = float(row.pop("updated_at", -1))
    row["views"] = float(counts["user_views"])
    return row  # type: ignore[return-value]


def test_a_features_function_that_changes_its_rows_changes_no_other_sample(
        tmp_path: Path) -> None:
    """The rows handed to the features function are its own, in the joiner as in the
    server: one that changes them in place (and returns the row as its features) made
    the replay's samples of one item share one dict, each showing the last event's
    values, and the unknown items of every table share one, where the server (fresh
    rows for each request) served each event's own."""
    (tmp_path / "prices.csv").write_text(f"item,updated_at,price\ni0,{T0},1\n"
                                         f"i0,{T0 + 5_000},2\n")
    events = [{"id": f"e{n}", "user": "u0", "item": item, "ts": T0 + 2_000 * n, "y": 1.0}
              for n, item in enumerate(["i0", "i9", "i0", "i0", "i9", "i0"])]
    with open(tmp_path / "views.jsonl", "wb") as f:
        f.writelines(orjson.dumps(e) + b"\n" for e in events)
    pipeline = replace(PIPELINE, features=_row_with_the_price_seen)
    log = SQLiteLog(tmp_path / "log.db")
    replay(log, Registry(tmp_path / "reg"), pipeline,
           [("views", str(tmp_path / "views.jsonl"))], data_dir=tmp_path)
    samples = {s["id"]: s["features"] for s in
               (orjson.loads(r.value) for r in log.read("samples", 0, 0, 10))}
    expected = {"e0": {"item": "i0", "price": 1, "seen": float(T0), "views": 0.0},
                "e1": {"price": -1.0, "seen": -1.0, "views": 1.0},
                "e2": {"item": "i0", "price": 1, "seen": float(T0), "views": 2.0},
                "e3": {"item": "i0", "price": 2, "seen": float(T0 + 5_000), "views": 3.0},
                "e4": {"price": -1.0, "seen": -1.0, "views": 4.0},
                "e5": {"item": "i0", "price": 2, "seen": float(T0 + 5_000), "views": 5.0}}
    assert samples == expected
    store = open_store(f"memory://?retention_ms={10 * WINDOW}")
    served = ServedCounters(pipeline.counters, store)
    scorer = EventScorer(pipeline, ServedTables(store, [PRICES], tmp_path), served)
    for e in events:
        event = Event("views", e["user"], e["id"], e["ts"], {"item": e["item"], "y": e["y"]})
        assert scorer.row_features(event) == expected[e["id"]]
        served.add_events([event])


@pytest.mark.parametrize("spread", [1000, 10])  # 10: many rows of a key share a time
def test_asof_table_matches_a_scan(tmp_path: Path, spread: int) -> None:
    """The row as of each time is the latest one, the last in file order of those that
    share its time, whatever the order of the file."""
    rng = random.Random(5)
    rows = [(f"k{rng.randrange(3)}", rng.randrange(T0, T0 + spread)) for _ in range(60)]
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["k", "at", "n"])
        w.writerows([k, at, n] for n, (k, at) in enumerate(rows))
    table = AsOfTable.load(spec.Table("t", "t.csv", key="k", as_of="at"), tmp_path)
    for ts in range(T0 - 5, T0 + 1005, 7):
        for key in ("k0", "k1", "k2", "k9"):
            seen = [(at, n) for n, (k, at) in enumerate(rows) if k == key and at <= ts]
            want = max(seen)[1] if seen else None
            assert table.get(key, ts).get("n") == want


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_window_counter_matches_a_scan(seed: int) -> None:
    rng = random.Random(seed)
    counter = WindowCounter(window_ms=50)
    added: list[tuple[str, int]] = []
    now = 0
    for _ in range(2000):
        now += rng.randrange(0, 5)
        if rng.random() < 0.6:
            key, ts = f"k{rng.randrange(5)}", now + rng.randrange(-20, 20)  # some out of order
            counter.add(key, ts)
            added.append((key, ts))
        else:
            key = f"k{rng.randrange(6)}"
            want = sum(1 for k, t in added if k == key and now - 50 <= t < now)
            assert counter.count(key, now) == want


PURCHASES = spec.Stream("purchases", {"item": str, "bought": bool}, key="user", id="id")
PAGE_VIEWS = spec.Stream("page_views", {"item": str}, key="user", id="id")
COUNTED = spec.Pipeline(
    name="counted", feedback=spec.EventLabel(PURCHASES, label="bought", counted=(PAGE_VIEWS,)),
    counters=(spec.WindowCount("views_of_item", "page_views", WINDOW, by="item"),),
    features=lambda e, rows, counts: {"views": float(counts["views_of_item"])},
    learner=lambda: FTRL(bits=10), target="bought",
    policies=spec.Policies(publish_every_samples=10**9, publish_every_ms=10**12))


def test_counters_of_another_stream_are_as_of_each_event(tmp_path: Path) -> None:
    rng = random.Random(11)
    views = [{"id": f"v{n}", "user": "u", "item": f"i{rng.randrange(3)}",
              "ts": T0 + rng.randrange(300_000)} for n in range(400)]
    buys = [{"id": f"b{n}", "user": "u", "item": f"i{rng.randrange(3)}", "bought": n % 2 == 0,
             "ts": T0 + rng.randrange(300_000)} for n in range(100)]
    for name, rows in (("views", views), ("buys", buys)):
        with open(tmp_path / f"{name}.jsonl", "wb") as f:
            f.writelines(orjson.dumps(r) + b"\n" for r in sorted(rows, key=lambda r: r["ts"]))
    log = SQLiteLog(tmp_path / "log.db")
    report, _ = replay(log, Registry(tmp_path / "reg"), COUNTED,
                       [("page_views", str(tmp_path / "views.jsonl")),
                        ("purchases", str(tmp_path / "buys.jsonl"))])
    samples = {s["id"]: s for s in (orjson.loads(r.value)
                                    for r in log.read("samples", 0, 0, 10**6))}
    assert report["samples"] == len(samples) == len(buys) and report["events"] == 500
    for b in buys:
        want = sum(v["item"] == b["item"] and b["ts"] - WINDOW <= v["ts"] < b["ts"]
                   for v in views)
        assert samples[b["id"]]["features"]["views"] == want


def test_a_counted_event_read_after_later_samples_is_said(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A counted stream's file not in time order gave samples counts lower than the scan's,
    in silence: no dead letter (the event is counted from then on), no word in the replay.
    Now the report counts such events (``late_counted``) and the replay says what to do."""
    views = [{"id": f"v{n}", "user": "u", "item": "i0", "ts": T0 + 1000 * n}
             for n in range(1, 300)]
    views.append({"id": "v0", "user": "u", "item": "i0", "ts": T0 + 500})  # read last
    buys = [{"id": f"b{n}", "user": "u", "item": "i0", "bought": n % 2 == 0,
             "ts": T0 + 1000 * n + 1} for n in range(300)]
    for name, rows in (("views", views), ("buys", buys)):
        with open(tmp_path / f"{name}.jsonl", "wb") as f:
            f.writelines(orjson.dumps(r) + b"\n" for r in rows)
    sources = [("page_views", str(tmp_path / "views.jsonl")),
               ("purchases", str(tmp_path / "buys.jsonl"))]
    log = SQLiteLog(tmp_path / "log.db")
    report, _ = replay(log, Registry(tmp_path / "reg"), COUNTED, sources)
    samples = {s["id"]: s["features"]["views"] for s in (
        orjson.loads(r.value) for r in log.read("samples", 0, 0, 10**6))}
    short = [b["id"] for b in buys if samples[b["id"]] != sum(
        b["ts"] - WINDOW <= v["ts"] < b["ts"] for v in views)]
    assert short and report["late_counted"] == 1
    from livelearn.cli import main
    assert main(["-q", "replay", "test_point_in_time:COUNTED", "--workdir",
                 str(tmp_path / "w"), "--events", *[f"{s}={f}" for s, f in sources]]) == 0
    assert "1 event of a counted stream came after samples of later times were emitted " \
        "(older, by more than the allowed lateness of 0 ms, than events read before them): " \
        "those samples' counts of their keys miss them. Is a file not in time order? Sort " \
        "it by its time field, or give the pipeline's allowed_lateness_ms the lateness its " \
        "events come with" in capsys.readouterr().out


#: Page views without an id field: each one's id is a hash of the event (livelearn.ingest),
#: the same for its copies; ten minutes of allowed lateness keep every sample open until
#: the copies are read (the copies of a file ingested twice come after the whole file).
VIEWS_NO_ID = spec.Stream("page_views", {"item": str}, key="user")
COPIED = replace(COUNTED, feedback=replace(COUNTED.feedback, counted=(VIEWS_NO_ID,),
                                           allowed_lateness_ms=10 * WINDOW))


@pytest.mark.parametrize("again", ["views.jsonl", "views.csv"])
def test_copies_of_a_counted_event_are_counted_once_as_the_server_counts_them(
        tmp_path: Path, again: str) -> None:
    """A counted stream's file ingested twice (or its events again, spelled otherwise: CSV)
    gives copies of one id each: the joiner counted every copy, the server counts an id
    once (serve.counters), so the samples were trained on counts the server never serves.
    Now the joiner dead-letters each copy as a duplicate: the samples' counts are the
    server's, and a scan's of the events once."""
    from livelearn.ingest import ingest
    from livelearn.join.runner import JoinRunner

    rng = random.Random(13)
    views = [{"user": "u", "item": f"i{rng.randrange(3)}", "ts": ts}
             for ts in sorted(rng.sample(range(T0, T0 + 300_000), 200))]
    buys = sorted(({"id": f"b{n}", "user": "u", "item": f"i{rng.randrange(3)}",
                    "bought": n % 2 == 0, "ts": T0 + rng.randrange(300_000)}
                   for n in range(100)), key=lambda b: b["ts"])
    (tmp_path / "views.jsonl").write_bytes(b"".join(orjson.dumps(v) + b"\n" for v in views))
    (tmp_path / "views.csv").write_text("ts,user,item\n" + "".join(
        f"{v['ts']},{v['user']},{v['item']}\n" for v in views))
    (tmp_path / "buys.jsonl").write_bytes(b"".join(orjson.dumps(b) + b"\n" for b in buys))
    log = SQLiteLog(tmp_path / "log.db")
    for topic in COPIED.topics:
        log.create_topic(topic)
    for stream, name in (("page_views", "views.jsonl"), ("page_views", again),
                         ("purchases", "buys.jsonl")):
        ingest(log, COPIED, stream, tmp_path / name)
    runner = JoinRunner(log, COPIED, data_dir=tmp_path)
    while runner.step(10**6, final=True):
        pass
    samples = {s["id"]: s["features"] for s in (orjson.loads(r.value)
                                                for r in log.read("samples", 0, 0, 10**6))}
    dead = [orjson.loads(r.value)["reason"] for r in log.read("dead_letters", 0, 0, 10**6)]
    served = ServedCounters(COPIED.counters, open_store(f"memory://?retention_ms={10 * WINDOW}"))
    served.add_logged(log, COPIED.schemas)
    scorer = EventScorer(COPIED, ServedTables(served.store, [], tmp_path), served)
    for b in buys:
        want = sum(v["item"] == b["item"] and b["ts"] - WINDOW <= v["ts"] < b["ts"]
                   for v in views)
        event = Event("purchases", "u", b["id"], b["ts"], {"item": b["item"],
                                                           "bought": b["bought"]})
        assert samples[b["id"]] == scorer.row_features(event) == {"views": float(want)}, b
    assert dead == ["duplicate"] * len(views)


def test_a_counted_file_ingested_again_after_a_bounded_run_is_counted_once(
        tmp_path: Path) -> None:
    """`run --until-idle`, then the page views ingested again and another bounded run: the
    restarted joiner reads the ids back from the log, each copy is a duplicate, and a
    purchase after them counts each page view once."""
    from livelearn.ingest import ingest
    from livelearn.join.runner import JoinRunner

    views = [{"user": "u", "item": "i0", "ts": T0 + 1000 * n} for n in range(50)]
    (tmp_path / "views.jsonl").write_bytes(b"".join(orjson.dumps(v) + b"\n" for v in views))
    (tmp_path / "buy.jsonl").write_bytes(orjson.dumps(
        {"id": "b0", "user": "u", "item": "i0", "bought": True, "ts": T0 + 50_000}) + b"\n")
    log = SQLiteLog(tmp_path / "log.db")
    for topic in COPIED.topics:
        log.create_topic(topic)
    for stream, name in (("page_views", "views.jsonl"), ("page_views", "views.jsonl"),
                         ("purchases", "buy.jsonl")):
        ingest(log, COPIED, stream, tmp_path / name)
        runner = JoinRunner(log, COPIED, data_dir=tmp_path)
        while runner.step(10**6, final=True):
            pass
    dead = [orjson.loads(r.value)["reason"] for r in log.read("dead_letters", 0, 0, 10**6)]
    assert dead == ["duplicate"] * len(views)
    [sample] = [orjson.loads(r.value) for r in log.read("samples", 0, 0, 10)]
    assert sample["features"] == {"views": float(len(views))}


def test_a_restarted_joiner_gives_the_same_samples(tmp_path: Path) -> None:
    """Stop the label-in-event join anywhere, restart it from its checkpoint: the samples
    (counters included) equal those of a run never interrupted."""
    from livelearn.ingest import ingest
    from livelearn.join.runner import JoinRunner

    _history(tmp_path, random.Random(4))
    runs = []
    for steps in (None, 7, 113):
        log = SQLiteLog(tmp_path / f"log{steps}.db")
        for topic in PIPELINE.topics:
            log.create_topic(topic)
        ingest(log, PIPELINE, "views", tmp_path / "views.jsonl")
        while JoinRunner(log, PIPELINE, data_dir=tmp_path).step(steps or 10**6, final=True):
            pass  # a new runner, restored from the checkpoint, at every step
        runs.append([r.value for r in log.read("samples", 0, 0, 10**6)])
    assert runs[0] and runs[0] == runs[1] == runs[2]


def test_a_joiner_restarted_from_its_checkpoints_makes_the_same_samples(tmp_path: Path) -> None:
    """Events of a labelled stream wait in the joiner's state as their own windows; a
    joiner restarted from each checkpoint ends with the samples of one never stopped."""
    from livelearn.ingest import ingest
    from livelearn.join.runner import JoinRunner

    _, events = _history(tmp_path, random.Random(9))

    def samples(name: str, step: int) -> list[dict[str, Any]]:
        log = SQLiteLog(tmp_path / f"{name}.db")
        for topic in PIPELINE.topics:
            log.create_topic(topic)
        ingest(log, PIPELINE, "views", tmp_path / "views.jsonl")
        held = []  # events waiting in each checkpoint
        while JoinRunner(log, PIPELINE, data_dir=tmp_path).step(step, final=True):
            held.append(len(orjson.loads(log.committed("joiner").state or b"{}")["open"]))
        assert any(held) or step > len(events)
        return [orjson.loads(r.value) for r in log.read("samples", 0, 0, 10**6)]

    once = samples("once", 10**6)
    assert len(once) == len(events)
    assert samples("restarted", 37) == once


def _stopped_midway(tmp_path: Path) -> SQLiteLog:
    """A log of 600 events of PIPELINE, and the checkpoint of a joiner stopped after
    300: not its counters, but where a restart reads again what they hold."""
    from livelearn.ingest import ingest
    from livelearn.join.runner import JoinRunner

    _history(tmp_path, random.Random(4))
    log = SQLiteLog(tmp_path / "log.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    ingest(log, PIPELINE, "views", tmp_path / "views.jsonl")
    JoinRunner(log, PIPELINE, data_dir=tmp_path).step(300)
    state = log.committed("joiner").state
    assert state is not None and orjson.loads(state)["enricher"] is None
    assert orjson.loads(state)["rewind"] == [["views", 0, 0]]
    return log


def test_a_joiner_restarted_with_other_features_runs_on(tmp_path: Path) -> None:
    """The features may change between restarts: the samples emitted from then on
    have the new ones, with the counts the checkpoint carried over."""
    from livelearn.join.runner import JoinRunner

    log = _stopped_midway(tmp_path)
    done = log.end_offset("samples", 0)
    more = replace(PIPELINE, features=lambda e, rows, counts: {**features(e, rows, counts),
                                                                "new": 1.0})
    runner = JoinRunner(log, more, data_dir=tmp_path)
    while runner.step(10**6, final=True):
        pass
    samples = [orjson.loads(r.value)["features"] for r in log.read("samples", 0, 0, 10**6)]
    assert len(samples) == 600 and 0 < done < 600
    assert ["new" in s for s in samples] == [False] * done + [True] * (600 - done)
    once = SQLiteLog(tmp_path / "once.db")  # the counts are those of a run never stopped
    report, _ = replay(once, Registry(tmp_path / "reg"), more,
                       [("views", str(tmp_path / "views.jsonl"))], data_dir=tmp_path)
    assert [{**s, "new": 1.0} for s in samples[:done]] + samples[done:] == \
        [orjson.loads(r.value)["features"] for r in once.read("samples", 0, 0, 10**6)]


BUYS = spec.Stream("buys", {"item": str, "y": float}, key="user", id="id")
USER_VIEWS, ITEM_VIEWS = PIPELINE.counters


@pytest.mark.parametrize(("change", "said"), [
    (lambda p: replace(p, counters=(USER_VIEWS, replace(ITEM_VIEWS, window_ms=WINDOW // 2))),
     "counters item_views (views by item, 60000 ms), user_views (views by key, 60000 ms); "
     "the pipeline now says item_views (views by item, 30000 ms), user_views (views by key, "
     "60000 ms)"),
    (lambda p: replace(p, counters=(USER_VIEWS,)),
     "counters item_views (views by item, 60000 ms), user_views (views by key, 60000 ms); "
     "the pipeline now says user_views (views by key, 60000 ms)"),
    (lambda p: replace(p, feedback=spec.EventLabel(BUYS, label="y", counted=(CLICKS,))),
     "labelled stream 'views'; the pipeline now says 'buys'"),
    (lambda p: replace(p, feedback=replace(p.feedback, allowed_lateness_ms=1000)),
     "allowed lateness 0 ms; the pipeline now says 1000 ms"),
], ids=["counter window", "counter removed", "labelled stream", "allowed lateness"])
def test_a_joiner_restarted_with_another_join_refuses_to_start(
        tmp_path: Path, change: Callable[[spec.Pipeline], spec.Pipeline], said: str) -> None:
    """Counters that held one definition's counts, events labelled from another stream:
    the restarted joiner says what changed and writes nothing."""
    from livelearn.join.runner import JoinRunner

    log = _stopped_midway(tmp_path)
    before, samples = log.committed("joiner"), log.end_offset("samples", 0)
    changed = change(PIPELINE)
    for topic in changed.topics:
        log.create_topic(topic)
    with pytest.raises(ConfigError, match="^" + re.escape(
            f"the joiner's checkpoint in group 'joiner' was made with {said}. The samples "
            f"would mix the two: ")):
        JoinRunner(log, changed, data_dir=tmp_path)
    assert log.committed("joiner") == before and log.end_offset("samples", 0) == samples


@pytest.mark.parametrize("step", [5, 10, 10**6])
def test_a_copy_read_after_a_final_step_is_still_a_duplicate(tmp_path: Path, step: int) -> None:
    """An event ingested twice (a re-run ingest) is dead-lettered as a duplicate and
    learned once, wherever the steps of a replay end."""
    from livelearn.ingest import ingest
    from livelearn.join.runner import JoinRunner

    _history(tmp_path, random.Random(4))
    lines = (tmp_path / "views.jsonl").read_bytes().splitlines(keepends=True)[:10]
    (tmp_path / "twice.jsonl").write_bytes(b"".join(lines + lines[-3:]))
    log = SQLiteLog(tmp_path / "log.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    ingest(log, PIPELINE, "views", tmp_path / "twice.jsonl")
    runner = JoinRunner(log, PIPELINE, data_dir=tmp_path, read_batch=5)
    while runner.step(step, final=True):
        pass
    assert len(log.read("samples", 0, 0, 100)) == 10
    dead = [orjson.loads(r.value)["reason"] for r in log.read("dead_letters", 0, 0, 100)]
    assert dead == ["duplicate"] * 3


def test_a_copy_ingested_after_a_bounded_run_is_still_a_duplicate(tmp_path: Path) -> None:
    """`run --until-idle`, then the last event ingested again and another bounded run:
    the copy is dead-lettered as a duplicate, not joined a second time."""
    from livelearn.ingest import ingest
    from livelearn.join.runner import JoinRunner

    _history(tmp_path, random.Random(4))
    lines = (tmp_path / "views.jsonl").read_bytes().splitlines(keepends=True)[:10]
    (tmp_path / "first.jsonl").write_bytes(b"".join(lines))
    (tmp_path / "again.jsonl").write_bytes(lines[-1])
    log = SQLiteLog(tmp_path / "log.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    for name in ("first.jsonl", "again.jsonl"):
        ingest(log, PIPELINE, "views", tmp_path / name)
        runner = JoinRunner(log, PIPELINE, data_dir=tmp_path)
        while runner.step(10**6, final=True):
            pass
    assert len(log.read("samples", 0, 0, 100)) == 10
    dead = [orjson.loads(r.value)["reason"] for r in log.read("dead_letters", 0, 0, 100)]
    assert dead == ["duplicate"]


def test_sharded_label_in_event_joiners_give_the_model_of_one(tmp_path: Path) -> None:
    """Four partitions joined by four shards: each writes the samples of its events to its
    own partition, in order, so the trainer learns every one, the model of one partition."""
    from dataclasses import replace

    from livelearn.ingest import ingest
    from livelearn.join.runner import JoinRunner
    from livelearn.train.trainer import Trainer

    _history(tmp_path, random.Random(5))
    # counted by user alone: a shard sees every event of its users (the events' key), not
    # every event of an item
    by_user = replace(PIPELINE, counters=PIPELINE.counters[:1],
                      features=lambda e, rows, counts: {"user_views": counts["user_views"],
                                                        "item": e.payload["item"]})
    models = []
    for shards in (1, 4):
        pipeline = replace(by_user, partitions=shards)
        log = SQLiteLog(tmp_path / f"log{shards}.db")
        for topic in pipeline.topics:
            log.create_topic(topic, shards)
        ingest(log, pipeline, "views", tmp_path / "views.jsonl")
        for k in range(shards):
            runner = JoinRunner(log, pipeline, data_dir=tmp_path, shard=(k, shards))
            while runner.step(50, final=True):
                pass
        trainer = Trainer(log, Registry(tmp_path / f"reg{shards}"), pipeline)
        while trainer.step(100, final=True):
            pass
        assert (trainer.samples, trainer.duplicates, trainer.behind) == (600, 0, 0)
        models.append(trainer.model.state())
    assert all(np.array_equal(models[0][k], models[1][k]) for k in models[0])


@pytest.mark.parametrize(("name", "text"), [
    ("prices.csv", "item,updated_at,price\ni0,2024-01-01T00:00:00Z,1\n"
                   "i0,2024-01-01T00:01:00.0010000001Z,2\n"),
    ("zoneless.csv", "item,updated_at,price\ni0,2024-01-01 00:00:00,1\n"
                     "i0,2024-01-01 00:01:00.0010005,2\n"),
    ("prices.jsonl", '{"item":"i0","updated_at":"2024-01-01T00:00:00Z","price":1}\n'
                     '{"item":"i0","updated_at":"2024-01-01T00:01:00.0010000001Z","price":2}\n'),
    ("zoneless.jsonl", '{"item":"i0","updated_at":"2024-01-01T00:00:00","price":1}\n'
                       '{"item":"i0","updated_at":"2024-01-01T00:01:00.0010005","price":2}\n'),
])
def test_a_row_valid_from_within_a_microsecond_in_iso_text_is_not_seen_before_it(
        tmp_path: Path, name: str, text: str) -> None:
    """ISO 8601 text with more than 6 decimals (nanoseconds): DuckDB's and Python's
    parsers kept microseconds, so a row valid from 0.1 ns after 00:01:00.001 was seen by
    the event at that ms, before its time; as a Parquet file's nanoseconds, it is
    rounded up to the next ms."""
    (tmp_path / name).write_text(text)
    prices = AsOfTable.load(replace(PRICES, path=name), tmp_path)
    assert [prices.get("i0", T0 + 60_000 + n)["price"] for n in (0, 1, 2)] == [1, 1, 2]
    assert prices.get("i0", T0 + 60_002)["updated_at"] == T0 + 60_002
