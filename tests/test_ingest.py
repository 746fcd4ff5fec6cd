"""`livelearn ingest`: JSON lines, CSV and stdin become events; a bad record becomes a
dead letter naming stream, field and problem, and never stops the ingest."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import orjson
import pytest

from livelearn import spec
from livelearn.cli import main
from livelearn.errors import ConfigError
from livelearn.ingest import ingest
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.linear import LinearRegression
from livelearn.registry import Registry
from livelearn.replay import replay
from livelearn.tables.offline import load_table

T = 1_704_067_200_000
RATINGS = spec.Stream("ratings", {"movie": str, "stars": float}, key="user")
PIPELINE = spec.Pipeline(name="movies", feedback=spec.EventLabel(RATINGS, label="stars"),
                         features=lambda e, rows, counts: {"movie": e.payload["movie"]},
                         learner=lambda: LinearRegression(bits=10), target="stars")

PIPELINE_FILE = '''
from livelearn import spec
from livelearn.models.linear import LinearRegression
from livelearn.tables.offline import load_table
RATINGS = spec.Stream("ratings", {"movie": str, "stars": float}, key="user")
PIPELINE = spec.Pipeline(name="movies", feedback=spec.EventLabel(RATINGS, label="stars"),
                         features=lambda e, rows, counts: {"movie": e.payload["movie"]},
                         learner=lambda: LinearRegression(bits=10), target="stars")
'''


def _topic(log: SQLiteLog, topic: str) -> list[dict]:
    return [orjson.loads(r.value) for r in log.read(topic, 0, 0, 10_000)]


def test_jsonl_flat_and_envelope_with_bad_lines(log: SQLiteLog, tmp_path: Path) -> None:
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    lines = [
        f'{{"user": "u1", "movie": "m1", "stars": 4, "ts": {T}}}',
        f'{{"stream": "ratings", "key": "u2", "id": "x", "ts": {T}, '
        '"payload": {"movie": "m2", "stars": 2.5}}',
        'not json',
        f'{{"user": "u1", "movie": "m1", "stars": "four", "ts": {T}}}',
        '{"user": "u1", "movie": "m1", "stars": 4, "ts": 1704067200}',
        f'{{"movie": "m1", "stars": 4, "ts": {T}}}',
        '{"user": "u3", "movie": "m3", "stars": 1, "ts": "2024-01-01T00:00:01Z"}',
        f'{{"user": 15, "movie": "m1", "stars": 4, "ts": {T}}}',
        f'{{"user": {{"a": 1}}, "movie": "m1", "stars": 4, "ts": {T}}}',
    ]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n\n")
    result = ingest(log, PIPELINE, "ratings", tmp_path / "r.jsonl")
    assert (result.events, result.dead) == (4, 5)
    events = _topic(log, "ratings")
    assert [(e["key"], e["ts"], e["payload"]["stars"]) for e in events] == [
        ("u1", T, 4.0), ("u2", T, 2.5), ("u3", T + 1000, 1.0), ("15", T, 4.0)]
    dead = _topic(log, "dead_letters")
    assert {d["reason"] for d in dead} == {"malformed"}
    details = [d["detail"] for d in dead]
    assert "not valid JSON" in details[0]
    assert details[1] == "stream 'ratings', field 'stars': expected float, got 'four'"
    assert "field 'ts': expected milliseconds since the epoch, got 1704067200 (seconds?)" \
        in details[2]
    assert details[3] == "stream 'ratings', field 'user': missing (the key)"
    assert details[4] == ("stream 'ratings', field 'user': expected a string or an integer "
                          "(the key), got {'a': 1}")
    assert dead[1]["source"].endswith("r.jsonl:4") and '"four"' in dead[1]["event"]
    # the same file again gives the same ids: the joiner will see duplicates
    ingest(log, PIPELINE, "ratings", tmp_path / "r.jsonl")
    assert [e["id"] for e in _topic(log, "ratings")][4:] == [e["id"] for e in events]


def test_cli_csv_and_stdin(tmp_path: Path) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    (tmp_path / "r.csv").write_text(f"user,movie,stars,ts\nu1,m1,4,{T}\nu2,m2,x,{T}\n")
    args = [str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w")]
    assert main(["-q", "ingest", *args, "ratings", str(tmp_path / "r.csv")]) == 0
    line = b'{"user": "u9", "movie": "m9", "stars": 5, "ts": %d}\n' % T
    done = subprocess.run([sys.executable, "-m", "livelearn", "-q", "ingest", *args, "ratings",
                           "-"], input=line + b"oops\n", capture_output=True, check=True)
    assert b"1 events appended, 1 dead-lettered" in done.stdout
    log = SQLiteLog(tmp_path / "w" / "log.db")
    assert [(e["key"], e["payload"]["stars"]) for e in _topic(log, "ratings")] == [
        ("u1", 4.0), ("u9", 5)]
    assert [d["source"].rsplit(":", 1)[1] for d in _topic(log, "dead_letters")] == ["3", "2"]
    assert main(["-q", "ingest", *args, "nope", str(tmp_path / "r.csv")]) == 2
    # a quoted cell's line ends as written, from stdin as from a file (stdin gave "\n")
    crlf = f'user,movie,stars,ts\r\nu7,"m\r\n7",1,{T}\r\n'.encode()
    (tmp_path / "crlf.csv").write_bytes(crlf)
    assert main(["-q", "ingest", *args, "ratings", str(tmp_path / "crlf.csv")]) == 0
    subprocess.run([sys.executable, "-m", "livelearn", "-q", "ingest", *args, "ratings", "-",
                    "--format", "csv"], input=crlf, capture_output=True, check=True)
    assert [e["payload"]["movie"] for e in _topic(log, "ratings")[2:]] == ["m\r\n7"] * 2


def test_ingest_into_the_in_memory_log_is_refused(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """It said "1 events appended" and kept nothing: the log went with the process."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    (tmp_path / "r.csv").write_text(f"user,movie,stars,ts\nu1,m1,4,{T}\n")
    assert main(["ingest", str(tmp_path / "p.py"), "ratings", str(tmp_path / "r.csv"),
                 "--log", "memory://"]) == 2
    out, err = capsys.readouterr()
    assert "appended" not in out
    assert err.startswith("livelearn: --log memory://: the in-memory log lasts as long as "
                          "the command, so the events ingested into it would be lost")


def test_a_pipe_is_read_as_a_file_is(tmp_path: Path) -> None:
    """``livelearn ingest P ratings <(zcat ratings.jsonl.gz)`` gives the command a pipe
    (/dev/fd/N), not a regular file: it is read as one."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    lines = b"".join(b'{"user": "u%d", "movie": "m1", "stars": 4, "ts": %d}\n' % (i, T + i)
                     for i in range(3))
    done = subprocess.run(["bash", "-c", 'exec "$0" -m livelearn -q ingest "$1" ratings '
                           '<(printf "%s" "$2") --workdir "$3"', sys.executable,
                           str(tmp_path / "p.py"), lines.decode(), str(tmp_path / "w")],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert b"3 events appended, 0 dead-lettered" in done.stdout
    log = SQLiteLog(tmp_path / "w" / "log.db")
    assert [e["key"] for e in _topic(log, "ratings")] == ["u0", "u1", "u2"]


def test_bytes_that_are_not_utf8_and_ragged_rows_are_dead_lettered(log: SQLiteLog,
                                                                    tmp_path: Path) -> None:
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    good = b'{"user": "u1", "movie": "m\xc3\xa9", "stars": 4, "ts": %d}\n' % T
    (tmp_path / "r.jsonl").write_bytes(good + good.replace(b"\xc3\xa9", b"\xff"))
    (tmp_path / "r.csv").write_bytes(b"user,movie,stars,ts\nu2,m2,3,%d\nu3,m\xff,3,%d\n"
                                     b"u4,m4,3,%d,extra\n" % (T, T, T))
    assert (ingest(log, PIPELINE, "ratings", tmp_path / "r.jsonl").dead,
            ingest(log, PIPELINE, "ratings", tmp_path / "r.csv").dead) == (1, 2)
    assert [(e["key"], e["payload"]["movie"]) for e in _topic(log, "ratings")] == [
        ("u1", "mé"), ("u2", "m2")]
    dead = _topic(log, "dead_letters")
    assert [d["source"].rsplit("/", 1)[1] for d in dead] == ["r.jsonl:2", "r.csv:3", "r.csv:4"]
    assert dead[0]["detail"] == ("stream 'ratings': the line is not valid UTF-8 (byte 0xff "
                                 "at column 27)")
    assert '"m\ufffd"' in dead[0]["event"]
    assert dead[1]["detail"] == "stream 'ratings', field 'movie': not valid UTF-8"
    assert dead[2]["detail"] == "stream 'ratings': the row has 1 more cells than the header"


def test_the_one_pass_path_gives_what_to_event_gives() -> None:
    """A JSON line that the one-pass path takes becomes the very event and bytes that
    the general conversion makes of it (random records, some of them wrong)."""
    import random

    from livelearn.events import partition_key
    from livelearn.ingest import _FlatJson, to_event

    rng = random.Random(4)
    streams = [spec.Stream("s", {"card": str, "amount": float, "flag": bool}, key="card",
                           id="tx"),
               spec.Stream("s", {"card": str, "n": int}, key="card")]
    values: list[object] = ["", "c1", "c2", 1.5, 2, True, None, T, T // 1000, ["x"]]
    taken = 0
    for _ in range(3000):
        stream = rng.choice(streams)
        names = ["card", "amount", "flag", "n", "tx", "ts", "request_id", "extra"]
        record = {k: rng.choice(values) for k in names if rng.random() < 0.8}
        if rng.random() < 0.7:
            record.update(card=rng.choice(["c1", "c2"]), ts=T + rng.randrange(1000))
        line = orjson.dumps(record).decode()
        fast = _FlatJson(stream, now_ms=T)(line)
        if fast is None:
            continue
        taken += 1
        event = to_event(stream, line, now_ms=T)
        assert fast == (partition_key(event), event.to_json(), event.ts), line
    assert taken > 100


CLICKS = spec.Stream("clicks", {"request_id": str}, key="user")
SHOWN = spec.Pipeline(
    name="shown", feedback=spec.FeedbackJoin(streams=(CLICKS,), window_ms=60_000,
                                             label=lambda events: {"clicked": 0.0}),
    users=spec.Table("users", "users.csv", key="user_id", as_of="updated_at"),
    items=spec.Table("items", "items.csv", key="item_id"),
    features=lambda user, item, ts: {"plan": str(user.get("plan"))},
    learner=lambda: LinearRegression(bits=10), target="clicked")


def test_impressions_with_a_mistyped_field_are_dead_lettered_naming_it(
        log: SQLiteLog, tmp_path: Path) -> None:
    for topic in SHOWN.topics:
        log.create_topic(topic)
    (tmp_path / "users.csv").write_text("user_id,updated_at,plan\nu1,2023-12-31T00:00:00,pro\n")
    (tmp_path / "items.csv").write_text("item_id,x\ni1,1\n")
    shown = {"ts": T, "user": "u1", "item": "i1"}
    records = [{"request_id": "ok", **shown, "score": 0.25, "model_version": 3},
               {"request_id": "iso", **shown, "ts": "2024-01-01T00:00:01"},
               {"request_id": "x1", **shown, "score": "high"},
               {"request_id": "x2", **shown, "score": [1]},
               {"request_id": "x3", **shown, "model_version": "v3"},
               {"request_id": "x4", **shown, "model_version": 1.5},
               {"request_id": "x5", **shown, "user": {"a": 1}}]
    (tmp_path / "i.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in records))
    result = ingest(log, SHOWN, "predictions", tmp_path / "i.jsonl", data_dir=tmp_path)
    assert (result.events, result.dead) == (2, 5)
    assert [(p["request_id"], p["ts"], p["score"], p["model_version"], p["features"])
            for p in _topic(log, "predictions")] == [("ok", T, 0.25, 3, {"plan": "pro"}),
                                                     ("iso", T + 1000, 0.0, 0, {"plan": "pro"})]
    assert [d["detail"] for d in _topic(log, "dead_letters")] == [
        "stream 'predictions', field 'score': expected float, got 'high'",
        "stream 'predictions', field 'score': expected float, got [1]",
        "stream 'predictions', field 'model_version': expected int, got 'v3'",
        "stream 'predictions', field 'model_version': expected int, got 1.5",
        "stream 'predictions', field 'user': expected str, got {'a': 1}"]
    (tmp_path / "i.csv").write_text(f"request_id,ts,user,item,score\nc1,{T},u1,i1,0.5\n"
                                    f"c2,{T},u1,i1,nan\n")
    assert ingest(log, SHOWN, "predictions", tmp_path / "i.csv", data_dir=tmp_path).dead == 1
    assert _topic(log, "predictions")[-1]["score"] == 0.5
    assert _topic(log, "dead_letters")[-1]["detail"] == (
        "stream 'predictions', field 'score': expected float, got nan")
    # without a request_id, the same impression spelled another way gets the same id
    (tmp_path / "n.jsonl").write_text(f'{{"ts": {T}, "user": "u1", "item": "i1"}}\n'
                                      f'{{"ts": {T}, "user": "u2", "item": "i1"}}\n')
    (tmp_path / "n.csv").write_text("ts,user,item,score,model_version\n"
                                    "2024-01-01T00:00:00Z,u1,i1,0.0,0\n")
    for name in ("n.jsonl", "n.csv"):
        ingest(log, SHOWN, "predictions", tmp_path / name, data_dir=tmp_path)
    ids = [p["request_id"] for p in _topic(log, "predictions")[-3:]]
    assert ids[0] == ids[2] != ids[1]


def test_impressions_of_an_item_with_no_row_are_dead_lettered_as_the_server_refuses_them(
        log: SQLiteLog, tmp_path: Path) -> None:
    """The server answers 422 for a candidate with no row as of the request's time (in no
    table, or its rows start later); an impression of one was logged with an empty item
    row, a sample the server would never have made (training/serving skew)."""
    pipeline = replace(SHOWN, items=spec.Table("items", "items.csv", key="item_id",
                                               as_of="since"))
    for topic in pipeline.topics:
        log.create_topic(topic)
    (tmp_path / "users.csv").write_text("user_id,updated_at,plan\nu1,2023-12-31T00:00:00,pro\n")
    (tmp_path / "items.csv").write_text(f"item_id,since\ni1,{T}\ni2,{T + 1}\n")
    (tmp_path / "i.jsonl").write_bytes(b"".join(
        orjson.dumps({"request_id": r, "ts": T, "user": "u1", "item": item}) + b"\n"
        for r, item in (("ok", "i1"), ("gone", "i9"), ("early", "i2"))))
    result = ingest(log, pipeline, "predictions", tmp_path / "i.jsonl", data_dir=tmp_path)
    assert (result.events, result.dead) == (1, 2)
    assert [p["request_id"] for p in _topic(log, "predictions")] == ["ok"]
    assert [(d["reason"], d["detail"]) for d in _topic(log, "dead_letters")] == [
        ("malformed", "stream 'predictions', field 'item': item 'i9' is not in table "
                      "'items' (the server refuses it: 422)"),
        ("malformed", f"stream 'predictions', field 'item': item 'i2' has no row in table "
                      f"'items' as of ts {T} (ms): its rows start later (the server refuses "
                      f"it: 422)")]


def test_impressions_of_an_id_longer_than_predict_takes_are_dead_lettered(
        log: SQLiteLog, tmp_path: Path) -> None:
    """/predict refuses a user or item id of more than 256 characters (422); impressions of
    one were logged, samples of users and items the server never serves."""
    pipeline = replace(SHOWN, items=spec.Table("items", "items.csv", key="item_id"))
    for topic in pipeline.topics:
        log.create_topic(topic)
    long = "i" * 257
    (tmp_path / "users.csv").write_text("user_id,updated_at,plan\nu1,2023-12-31T00:00:00,pro\n")
    (tmp_path / "items.csv").write_text(f"item_id\ni1\n{long}\n")
    (tmp_path / "i.jsonl").write_bytes(b"".join(
        orjson.dumps({"request_id": r, "ts": T, "user": user, "item": item}) + b"\n"
        for r, user, item in (("ok", "u1", "i1"), ("item", "u1", long),
                              ("user", "u" * 300, "i1"))))
    result = ingest(log, pipeline, "predictions", tmp_path / "i.jsonl", data_dir=tmp_path)
    assert (result.events, result.dead) == (1, 2)
    assert [d["detail"] for d in _topic(log, "dead_letters")] == [
        "stream 'predictions', field 'item': 257 characters, more than the 256 /predict "
        "takes (the server refuses it: 422)",
        "stream 'predictions', field 'user': 300 characters, more than the 256 /predict "
        "takes (the server refuses it: 422)"]


def _plan(user: dict, item: dict, ts: int) -> dict:
    return {"plan": str(user["plan"])}  # KeyError for a user without a row


def test_the_replay_report_counts_the_ingests_dead_letters_by_reason(log: SQLiteLog,
                                                                     tmp_path: Path) -> None:
    """An impression whose features failed at ingest (the pipeline's code) was reported
    as ``malformed_at_ingest``, the record's fault; each reason is its own now."""
    (tmp_path / "users.csv").write_text("user_id,updated_at,plan\nu1,2023-12-31T00:00:00,pro\n")
    (tmp_path / "items.csv").write_text("item_id,x\ni1,1\n")
    shown = {"ts": T, "item": "i1"}
    records = [{"request_id": "ok", "user": "u1", **shown},
               {"request_id": "no-row", "user": "u2", **shown},
               {"request_id": "bad", "user": "u1", **shown, "score": "high"}]
    (tmp_path / "i.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in records))
    pipeline = replace(SHOWN, features=_plan)
    report, _ = replay(log, Registry(tmp_path / "reg"), pipeline,
                       [("predictions", str(tmp_path / "i.jsonl"))], tmp_path)
    assert report["dead_letters"] == {"failed_at_ingest": 1, "malformed_at_ingest": 1}
    assert (report["events"], report["samples"]) == (1, 1)


def test_a_leading_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a BOM: it must not stick to the first header or
    spoil the first JSON line, from a file or from stdin."""
    bom = b"\xef\xbb\xbf"
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    (tmp_path / "r.csv").write_bytes(bom + b"user,movie,stars,ts\r\nu1,m1,4,%d\r\n" % T)
    (tmp_path / "r.jsonl").write_bytes(
        bom + b'{"user": "u2", "movie": "m2", "stars": 3, "ts": %d}\n' % T)
    args = [str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w")]
    for name in ("r.csv", "r.jsonl"):
        assert main(["-q", "ingest", *args, "ratings", str(tmp_path / name)]) == 0
    line = bom + b'{"user": "u3", "movie": "m3", "stars": 5, "ts": %d}\n' % T
    subprocess.run([sys.executable, "-m", "livelearn", "-q", "ingest", *args, "ratings", "-"],
                   input=line, capture_output=True, check=True)
    log = SQLiteLog(tmp_path / "w" / "log.db")
    assert [(e["key"], e["payload"]["stars"]) for e in _topic(log, "ratings")] == [
        ("u1", 4.0), ("u2", 3), ("u3", 5)]
    assert _topic(log, "dead_letters") == []


def test_an_empty_csv_cell_is_a_missing_value_as_a_json_null_or_an_absent_field(
        log: SQLiteLog, tmp_path: Path) -> None:
    """An event without an id field gets the hash of its content as its id: a CSV row's
    empty cell of an undeclared column was the text "", so the same event from a CSV file
    and from JSON lines (the field absent, or null as pandas writes it) got other ids,
    and was learned twice."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    (tmp_path / "r.csv").write_text(f"user,movie,stars,ts,note\nu1,m1,4,{T},\n")
    (tmp_path / "r.jsonl").write_text(
        f'{{"user": "u1", "movie": "m1", "stars": 4, "ts": {T}}}\n'
        f'{{"user": "u1", "movie": "m1", "stars": 4, "ts": {T}, "note": null}}\n'
        f'{{"user": "u1", "movie": "m1", "stars": 4.0, "ts": "2024-01-01T00:00:00Z", '
        f'"note": null}}\n')
    for name in ("r.csv", "r.jsonl"):
        ingest(log, PIPELINE, "ratings", tmp_path / name, now_ms=T)
    events = _topic(log, "ratings")
    assert len({e["id"] for e in events}) == 1
    assert events[0]["payload"] == {"user": "u1", "movie": "m1", "stars": 4.0, "note": None}


def test_a_json_array_or_a_binary_file_is_refused_before_anything_is_ingested(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A JSON array written one object a line was ingested in part (the objects on lines
    without a comma), the rest dead-lettered, and the command succeeded; a Parquet or a
    gzip file gave a dead letter of binary text per "line"."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    record = f'{{"user": "u1", "movie": "m1", "stars": 4, "ts": {T}}}'
    (tmp_path / "r.json").write_text(f"[\n{record},\n{record}\n]\n")
    (tmp_path / "one.json").write_text(f"  [{record}]\n")
    (tmp_path / "r.jsonl.gz").write_bytes(gzip.compress(record.encode()))
    duckdb.sql(f"COPY (SELECT 'u1' AS user) TO '{tmp_path / 'r.parquet'}' (FORMAT parquet)")
    args = [str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"), "ratings"]
    for name, problem in [
            ("r.json", "holds a JSON array; ingest reads JSON lines, one object a line "
                       "(jq -c '.[]' FILE makes them of an array)"),
            ("one.json", "holds a JSON array; ingest reads JSON lines, one object a line "
                         "(jq -c '.[]' FILE makes them of an array)"),
            ("r.jsonl.gz", "is compressed (gzip); give <(zcat FILE), or - and pipe it in"),
            ("r.parquet", "is a Parquet file; ingest reads JSON lines or CSV (a table's "
                          "file may be Parquet)")]:
        assert main(["-q", "ingest", *args, str(tmp_path / name)]) == 2
        assert capsys.readouterr().err == f"livelearn: {tmp_path / name} {problem}\n"
    (tmp_path / "r.csv").write_text(f"user,movie,stars,ts\nu1,m1,4,{T}\n")
    assert main(["-q", "replay", *args[:-1], "--events", f"ratings={tmp_path / 'r.csv'}",
                 f"ratings={tmp_path / 'r.json'}"]) == 2  # before the first file is in
    assert "r.json holds a JSON array" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "livelearn", "-q", "ingest", *args, "-"],
                          input=f"[{record}]\n", capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (2, "livelearn: stdin holds a JSON array; "
                                                 "ingest reads JSON lines, one object a line "
                                                 "(jq -c '.[]' FILE makes them of an array)\n")
    log = SQLiteLog(tmp_path / "w" / "log.db")
    assert _topic(log, "ratings") == [] and _topic(log, "dead_letters") == []


def test_a_csv_read_as_json_lines_is_refused_saying_to_give_format_csv(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A CSV file without the .csv suffix, or piped to stdin, was read as JSON lines: every
    row a dead letter ("not valid JSON: unexpected character"), the header's too, and no
    word of --format csv. Now it is refused before anything is ingested, saying so."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    text = f"user,movie,stars,ts\nu1,m1,4,{T}\n"
    (tmp_path / "r.txt").write_text(text)
    args = [str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"), "ratings"]
    assert main(["-q", "ingest", *args, str(tmp_path / "r.txt")]) == 2
    assert capsys.readouterr().err == (
        f"livelearn: {tmp_path / 'r.txt'} reads as CSV, not JSON lines (its first line is "
        f"'user,movie,stars,ts'): give ingest --format csv, or name the file .csv (as "
        f"replay needs)\n")
    done = subprocess.run([sys.executable, "-m", "livelearn", "-q", "ingest", *args, "-"],
                          input=text, capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (
        2, "livelearn: stdin reads as CSV, not JSON lines (its first line is "
           "'user,movie,stars,ts'): give --format csv\n")
    assert main(["-q", "ingest", *args, str(tmp_path / "r.txt"), "--format", "csv"]) == 0
    log = SQLiteLog(tmp_path / "w" / "log.db")
    assert len(_topic(log, "ratings")) == 1 and _topic(log, "dead_letters") == []


def test_a_byte_order_mark_inside_a_csv_is_a_dead_letter_naming_its_field(
        log: SQLiteLog, tmp_path: Path) -> None:
    """Two files joined (cat a.csv b.csv): the second one's BOM stuck to a value, so that
    user "\\ufeffu2" was another user than "u2", in silence."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    bom = b"\xef\xbb\xbf"
    (tmp_path / "r.csv").write_bytes(bom + b"user,movie,stars,ts\nu1,m1,4,%d\n" % T + bom
                                     + b"u2,m2,3,%d\nu3,m3,5,%d\n" % (T, T))
    result = ingest(log, PIPELINE, "ratings", tmp_path / "r.csv", now_ms=T)
    assert (result.events, result.dead) == (2, 1)
    assert [e["key"] for e in _topic(log, "ratings")] == ["u1", "u3"]
    assert [(d["source"], d["detail"]) for d in _topic(log, "dead_letters")] == [
        (f"{tmp_path / 'r.csv'}:3", "stream 'ratings', field 'user': holds a byte order mark "
                                    "(U+FEFF), which only a file's start may hold: two "
                                    "files joined into one? Remove it")]


def test_a_dirty_csv_names_each_bad_row_by_its_line_in_the_file(log: SQLiteLog,
                                                                 tmp_path: Path) -> None:
    """Spaces around the header's names are not part of them; a dead letter's source is the
    line where its row starts, counting blank lines and newlines inside quotes."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    (tmp_path / "r.csv").write_text(
        f" user , movie ,stars, ts \nu1,m1,4,{T}\n\nu2,m2,3,{T},\n\"u3\",\"m\n3\",5,{T}\n"
        f"u4,m4,2,{T},x,y\nu5,m5,NaN,{T}\n\nu6,m6,1,²\nu7,m7,1,--{T}\n")
    result = ingest(log, PIPELINE, "ratings", tmp_path / "r.csv")
    assert (result.events, result.dead) == (2, 5)
    assert [(e["key"], e["payload"]["movie"]) for e in _topic(log, "ratings")] == [
        ("u1", "m1"), ("u3", "m\n3")]
    assert [(d["source"].rsplit("/", 1)[1], d["detail"]) for d in _topic(log, "dead_letters")] \
        == [("r.csv:4", "stream 'ratings': the row has 1 more cells than the header (all "
                        "empty: a comma at the end of the row?)"),
            ("r.csv:7", "stream 'ratings': the row has 2 more cells than the header"),
            ("r.csv:8", "stream 'ratings', field 'stars': expected float, got nan"),
            # digits int() does not take: the ingest stopped with a traceback before
            ("r.csv:10", "stream 'ratings', field 'ts': expected milliseconds since the "
                         "epoch or ISO 8601, got '²'"),
            ("r.csv:11", "stream 'ratings', field 'ts': expected milliseconds since the "
                         f"epoch or ISO 8601, got '--{T}'")]


def test_blank_lines_before_the_header_are_skipped(log: SQLiteLog, tmp_path: Path) -> None:
    """The blank first line was taken for a header naming nothing: every row, the header
    itself included, was dead-lettered with "the row has 4 more cells than the header"
    (a table's CSV, which DuckDB reads, skipped it)."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    (tmp_path / "r.csv").write_text(f"\n\r\nuser,movie,stars,ts\nu1,m1,4,{T}\nu2,m2,x,{T}\n")
    result = ingest(log, PIPELINE, "ratings", tmp_path / "r.csv")
    assert (result.events, result.dead) == (1, 1)
    assert [e["key"] for e in _topic(log, "ratings")] == ["u1"]
    (dead,) = _topic(log, "dead_letters")
    assert dead["source"].endswith("r.csv:5")
    assert dead["detail"] == "stream 'ratings', field 'stars': expected float, got 'x'"


def _visits(log: SQLiteLog) -> spec.Pipeline:
    """A pipeline of one stream, visits, whose field n is an int, and its topics in ``log``."""
    visits = spec.Stream("visits", {"n": int, "y": float}, key="user")
    pipeline = spec.Pipeline(name="visits", feedback=spec.EventLabel(visits, label="y"),
                             features=lambda e, rows, counts: {"n": e.payload["n"]},
                             learner=lambda: LinearRegression(bits=10), target="y")
    for topic in pipeline.topics:
        log.create_topic(topic)
    return pipeline


def test_an_int_of_more_than_64_bits_is_a_dead_letter(log: SQLiteLog, tmp_path: Path) -> None:
    """A CSV cell of more digits than an int of 64 bits holds: the ingest stopped with a
    traceback (orjson refused to write the event); a JSON line's is refused alike (it said
    "got 1.8446744073709552e+19": orjson read it as a float)."""
    pipeline = _visits(log)
    big = 2**64
    (tmp_path / "v.csv").write_text(f"user,n,y,ts\nu1,{big},1,{T}\nu2,{big - 1},1,{T}\n")
    (tmp_path / "v.jsonl").write_text(f'{{"user":"u3","n":{big},"y":1,"ts":{T}}}\n')
    assert ingest(log, pipeline, "visits", tmp_path / "v.csv").dead == 1
    assert ingest(log, pipeline, "visits", tmp_path / "v.jsonl").dead == 1
    assert [e["payload"]["n"] for e in _topic(log, "visits")] == [big - 1]
    assert [d["detail"] for d in _topic(log, "dead_letters")] == [
        f"stream 'visits', field 'n': expected int, got {big} (more than 64 bits)",
        f"stream 'visits', field 'n': expected int, got {big} (more than 64 bits)"]


def test_an_int_of_more_than_64_bits_in_an_undeclared_field_is_a_dead_letter(
        log: SQLiteLog, tmp_path: Path) -> None:
    """A JSON line whose undeclared field holds an integer beyond 64 bits (in a flat record,
    nested in a list, in an envelope's payload): orjson read it as a float, rounded, and the
    event was stored so without a word. Now each is a dead letter naming the field and the
    number, as the server's /feedback refuses such an event; an unsigned 64-bit integer and
    a large float are kept as they came."""
    pipeline = _visits(log)
    big, record = 10**30, {"user": "u1", "n": 1, "y": 1.0, "ts": T}
    lines = [{**record, "trace": big}, {**record, "tags": [1, {"id": -big}]},
             {"stream": "visits", "key": "u3", "id": "e3", "ts": T,
              "payload": {"n": 1, "y": 1.0, "trace": big}},
             {**record, "n": 2**64}, {**record, "trace": 2**64 - 1}, {**record, "x": 1.5e300}]
    (tmp_path / "v.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert ingest(log, pipeline, "visits", tmp_path / "v.jsonl").dead == 4
    assert [(e["payload"].get("trace"), e["payload"].get("x")) for e in _topic(log, "visits")
            ] == [(2**64 - 1, None), (None, 1.5e300)]
    said = ("is an integer of more than 64 bits, which JSON readers such as orjson (livelearn's "
            "roles too) take for a float, rounded: write it as text")
    assert [d["detail"] for d in _topic(log, "dead_letters")] == [
        f"stream 'visits', field 'trace': {big} {said} (\"{big}\")",
        f"stream 'visits', field 'tags[1].id': {-big} {said} (\"{-big}\")",
        f"stream 'visits', field 'payload.trace': {big} {said} (\"{big}\")",
        f"stream 'visits', field 'n': expected int, got {2**64} (more than 64 bits)"]


def test_a_record_nested_too_deep_is_a_dead_letter(log: SQLiteLog, tmp_path: Path) -> None:
    """A field nested 250 levels deep: orjson writes 255 at most, and the joiner's
    checkpoint holds an open window's event a few levels down (events.MAX_NESTING)."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    deep = "[" * 250 + "]" * 250
    (tmp_path / "r.jsonl").write_text(
        f'{{"user": "u1", "movie": "m1", "stars": 4, "ts": {T}, "tags": {deep}}}\n'
        f'{{"user": "u2", "movie": "m2", "stars": 3, "ts": {T}, "tags": [[["ok"]]]}}\n')
    assert ingest(log, PIPELINE, "ratings", tmp_path / "r.jsonl").dead == 1
    assert [e["payload"]["tags"] for e in _topic(log, "ratings")] == [[[["ok"]]]]
    assert [d["detail"] for d in _topic(log, "dead_letters")] == [
        "stream 'ratings': the record nests objects and arrays more than 100 levels deep"]


def test_a_csv_cell_nested_too_deep_is_a_dead_letter(log: SQLiteLog, tmp_path: Path) -> None:
    """A list field's cell of JSON 300 levels deep stopped the ingest with a traceback
    (orjson: "Recursion limit reached"), writing none of the file; 120 levels were taken,
    where a JSON line's are refused."""
    tagged = spec.Stream("tagged", {"tags": list, "stars": float}, key="user")
    pipeline = spec.Pipeline(name="tagged", feedback=spec.EventLabel(tagged, label="stars"),
                             features=lambda e, rows, counts: {"n": len(e.payload["tags"])},
                             learner=lambda: LinearRegression(bits=10), target="stars")
    for topic in pipeline.topics:
        log.create_topic(topic)
    rows = [f'u{n},"{"[" * n + "]" * n}",4,{T}' for n in (300, 120, 3)]
    (tmp_path / "t.csv").write_text("user,tags,stars,ts\n" + "\n".join(rows) + "\n")
    result = ingest(log, pipeline, "tagged", tmp_path / "t.csv")
    assert (result.events, result.dead) == (1, 2)
    assert [e["key"] for e in _topic(log, "tagged")] == ["u3"]
    assert [d["detail"] for d in _topic(log, "dead_letters")] == [
        "stream 'tagged', field 'tags': nests objects and arrays more than 100 levels deep"] * 2


def test_an_envelope_with_a_field_beside_its_payload_is_a_dead_letter(
        log: SQLiteLog, tmp_path: Path) -> None:
    """The event keeps stream, key, id, ts and payload: the field beside them was lost."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    (tmp_path / "r.jsonl").write_text(
        f'{{"key": "u1", "id": "a", "ts": {T}, "payload": {{"movie": "m1", "stars": 4}}, '
        f'"genre": "drama"}}\n'
        f'{{"key": "u2", "id": "b", "ts": {T}, "payload": {{"movie": "m2", "stars": 3, '
        f'"genre": "drama"}}}}\n')
    assert ingest(log, PIPELINE, "ratings", tmp_path / "r.jsonl").dead == 1
    assert [e["id"] for e in _topic(log, "ratings")] == ["b"]
    [dead] = _topic(log, "dead_letters")
    assert dead["detail"] == ("stream 'ratings', field 'genre': an event has only the fields "
                              "stream, key, id, ts and payload; put 'genre' in payload, or it "
                              "would be lost")
    assert dead["source"].endswith("r.jsonl:1")


def test_a_csv_header_naming_a_column_twice_is_refused(log: SQLiteLog, tmp_path: Path) -> None:
    """A row's dict kept the last of the two cells: the other was lost, unsaid."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    (tmp_path / "r.csv").write_text(f"user,movie,stars,ts,stars\nu1,m1,4,{T},5\n")
    with pytest.raises(ConfigError, match=r"r.csv: the CSV header names 'stars' twice; give "
                                          r"each column a name of its own"):
        ingest(log, PIPELINE, "ratings", tmp_path / "r.csv")
    assert _topic(log, "ratings") == []


def test_a_long_cell_is_read_and_a_quote_never_closed_dead_letters_the_rest(
        log: SQLiteLog, tmp_path: Path) -> None:
    """Python's csv module stops at a cell of 131,072 characters: the ingest stopped there
    with a traceback (a long text; the rest of a file after a stray quote)."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    rows = "".join(f"u{i},m{i},4,{T}\n" for i in range(20_000))
    (tmp_path / "r.csv").write_text(
        f"user,movie,stars,ts\nu1,{'x' * 200_000},4,{T}\nu2,\"m2,4,{T}\n{rows}")
    result = ingest(log, PIPELINE, "ratings", tmp_path / "r.csv")
    assert (result.events, result.dead) == (1, 1)
    assert len(_topic(log, "ratings")[0]["payload"]["movie"]) == 200_000
    [dead] = _topic(log, "dead_letters")
    assert dead["source"].endswith("r.csv:3") and "field 'ts': missing" in dead["detail"]


def test_iso_times_with_milliseconds_are_read_to_the_millisecond(log: SQLiteLog,
                                                                   tmp_path: Path) -> None:
    """.843 s is 843 ms, in an event and in a table's as_of (a float product read 842)."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    (tmp_path / "r.csv").write_text("user,movie,stars,ts\nu1,m1,4,2004-03-28T03:20:14.843Z\n"
                                    "u2,m2,4,2004-07-06T05:26:23.643+02:00\n")
    (tmp_path / "users.csv").write_text("user,since\nu1,2004-07-01T15:10:51.781\n")
    ingest(log, PIPELINE, "ratings", tmp_path / "r.csv", now_ms=T)
    assert [e["ts"] for e in _topic(log, "ratings")] == [1080444014843, 1089084383643]
    users = spec.Table("users", "users.csv", key="user", as_of="since")
    assert load_table(users, tmp_path)["u1"]["since"] == 1088694651781


def test_spaces_around_an_iso_time_are_not_part_of_it(log: SQLiteLog, tmp_path: Path) -> None:
    """A CSV row written with ", " between cells: its time in ms was read, in ISO 8601 it
    was dead-lettered ("expected milliseconds since the epoch or ISO 8601, got ' 2024-...'")."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    (tmp_path / "r.csv").write_text(f"user, movie, stars, ts\nu1, m1, 4, {T}\n"
                                    "u2, m2, 4, 2024-01-01T00:00:00Z\n"
                                    "u3, m3, 4, 2024-01-01T01:00:00+01:00 \n")
    result = ingest(log, PIPELINE, "ratings", tmp_path / "r.csv", now_ms=T)
    assert (result.events, result.dead) == (3, 0)
    assert [e["ts"] for e in _topic(log, "ratings")] == [T, T, T]


def test_an_iso_time_before_1973_is_not_called_seconds(log: SQLiteLog, tmp_path: Path) -> None:
    """The log takes no event time before MIN_TS_MS (an earlier number is seconds by
    mistake); a date before it was refused as "got 0 (seconds?)", which it is not."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    (tmp_path / "r.csv").write_text("user,movie,stars,ts\nu1,m1,4,1970-01-01\nu2,m2,4,0\n")
    assert ingest(log, PIPELINE, "ratings", tmp_path / "r.csv").dead == 2
    assert [d["detail"] for d in _topic(log, "dead_letters")] == [
        "stream 'ratings', field 'ts': '1970-01-01' is before 1973-03-03T09:46:40Z, the "
        "earliest event time taken (an earlier number is taken for seconds)",
        "stream 'ratings', field 'ts': expected milliseconds since the epoch, got 0 (seconds?)"]


def test_a_time_in_float_seconds_or_before_1970_is_named_so(log: SQLiteLog,
                                                         tmp_path: Path) -> None:
    """A producer that writes time.time() (float seconds) was told "expected integer
    milliseconds" with no word of seconds, and a negative time "(seconds?)", which it is
    not: each dead letter now says which mistake it likely is."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    (tmp_path / "r.jsonl").write_text(
        '{"user": "u1", "movie": "m1", "stars": 4, "ts": 1704067200.123456}\n'
        f'{{"user": "u2", "movie": "m1", "stars": 4, "ts": {-T}}}\n'
        f'{{"user": "u3", "movie": "m1", "stars": 4, "ts": "{-T}"}}\n'
        f'{{"user": "u4", "movie": "m1", "stars": 4, "ts": {T}.0}}\n')
    assert ingest(log, PIPELINE, "ratings", tmp_path / "r.jsonl", now_ms=T).dead == 4
    assert [d["detail"] for d in _topic(log, "dead_letters")] == [
        "stream 'ratings', field 'ts': expected integer milliseconds since the epoch, got "
        "1704067200.123456 (seconds? int(time.time() * 1000) gives ms)"] + 2 * [
        "stream 'ratings', field 'ts': expected milliseconds since the epoch, got "
        "-1704067200000, a time before 1970"] + [
        "stream 'ratings', field 'ts': expected integer milliseconds since the epoch, got "
        f"{T}.0 (a number: write whole milliseconds, with no fraction or exponent)"]


def test_a_csv_time_in_float_seconds_or_not_whole_ms_is_named_so(log: SQLiteLog,
                                                                tmp_path: Path) -> None:
    """A CSV cell of time.time() (float seconds), or of ms in a column pandas made floats,
    was told only "expected milliseconds since the epoch or ISO 8601"."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    (tmp_path / "r.csv").write_text("user,movie,stars,ts\nu1,m1,4,1704067200.123456\n"
                                    f"u2,m1,4,{T}.0\nu3,m1,4,nan\n")
    assert ingest(log, PIPELINE, "ratings", tmp_path / "r.csv", now_ms=T).dead == 3
    start = "stream 'ratings', field 'ts': expected milliseconds since the epoch or ISO 8601, got"
    assert [d["detail"] for d in _topic(log, "dead_letters")] == [
        f"{start} '1704067200.123456' (seconds? int(time.time() * 1000) gives ms)",
        f"{start} '{T}.0' (a number: write whole milliseconds, with no fraction or exponent)",
        f"{start} 'nan'"]


def test_a_date_and_time_written_as_digits_is_a_dead_letter(log: SQLiteLog,
                                                           tmp_path: Path) -> None:
    """YYYYMMDDhhmm (as exports write a time) read as ms is a time in 1976: every event was
    taken, in one summer of 1976, in silence (a JSON line's as a CSV cell's); YYYYMMDDhhmmss
    is the year 2611, refused as "in the future" without a word of why. A time in ms of
    1976 whose digits are no date is an event as before."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    (tmp_path / "r.jsonl").write_text(
        '{"user": "u1", "movie": "m1", "stars": 4, "ts": 202311291030}\n'
        '{"user": "u2", "movie": "m1", "stars": 4, "ts": 200000000000}\n')
    (tmp_path / "r.csv").write_text("user,movie,stars,ts\nu3,m1,4,20231129103000\n"
                                    "u4,m1,4,20231129\nu5,m1,4,200000000001\n")
    assert ingest(log, PIPELINE, "ratings", tmp_path / "r.jsonl", now_ms=T).dead == 1
    assert ingest(log, PIPELINE, "ratings", tmp_path / "r.csv", now_ms=T).dead == 2
    assert [e["ts"] for e in _topic(log, "ratings")] == [200000000000, 200000000001]
    assert [d["detail"] for d in _topic(log, "dead_letters")] == [
        f"stream 'ratings', field 'ts': {digits} reads as 2023-11-29T{time} written as digits "
        f"({form}), not milliseconds since the epoch: write it as ISO 8601 text "
        f"(2023-11-29T{time}Z) or ms" for digits, time, form in (
            ("202311291030", "10:30:00", "YYYYMMDDhhmm"),
            ("20231129103000", "10:30:00", "YYYYMMDDhhmmss"),
            ("20231129", "00:00:00", "YYYYMMDD"))]


def test_a_time_of_thousands_of_digits_is_a_dead_letter(log: SQLiteLog,
                                                        tmp_path: Path) -> None:
    """int() refuses text of more than 4,300 digits with a ValueError: the ingest stopped
    with a traceback, writing none of the file."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    (tmp_path / "r.csv").write_text(f"user,movie,stars,ts\nu1,m1,4,{'1' * 5000}\n"
                                    f"u2,m2,4,{T}\n")
    (tmp_path / "r.jsonl").write_text(f'{{"user": "u3", "movie": "m3", "stars": 4, '
                                      f'"ts": "{"9" * 4400}"}}\n')
    assert ingest(log, PIPELINE, "ratings", tmp_path / "r.csv", now_ms=T).events == 1
    assert ingest(log, PIPELINE, "ratings", tmp_path / "r.jsonl", now_ms=T).dead == 1
    assert [d["detail"] for d in _topic(log, "dead_letters")] == [
        f"stream 'ratings', field 'ts': expected milliseconds since the epoch, got a number "
        f"of {n} digits" for n in (5000, 4400)]


def test_an_event_ahead_of_the_clock_is_a_dead_letter_and_the_present_is_joined(
        log: SQLiteLog, tmp_path: Path) -> None:
    """An event an hour ahead of the clock (a producer's wrong clock) is dead-lettered at
    ingest. It was taken (a day ahead was allowed): the joiner's watermark went an hour
    ahead with it, and every present event after it was dead-lettered as late."""
    from livelearn.loop import Loop
    from livelearn.registry import Registry

    now = int(time.time() * 1000)
    times = [now - 60_000 + 1_000 * i for i in range(20)]
    times.insert(5, now + 3_600_000)
    (tmp_path / "r.jsonl").write_text("".join(
        f'{{"user": "u{i}", "movie": "m1", "stars": 4, "ts": {ts}}}\n'
        for i, ts in enumerate(times)))
    loop = Loop(log, Registry(tmp_path / "registry"), PIPELINE, tmp_path)
    result = ingest(log, PIPELINE, "ratings", tmp_path / "r.jsonl")
    loop.drain()
    assert (result.events, result.dead) == (20, 1)
    assert "r.jsonl:6" in result.first_errors[0] and "in the future" in result.first_errors[0]
    assert dict(loop.dead_letters()) == {}
    assert sorted(s["ts"] for s in _topic(log, "samples")) == sorted(times[:5] + times[6:])


def test_an_event_spelled_another_way_gets_the_same_id(log: SQLiteLog, tmp_path: Path) -> None:
    """Without an id field, an event's id is a hash of the event as stored: the same rating
    as a JSON line with 4 or 4.0 stars and as a CSV row with a time in ms or ISO 8601 gets
    one id, and the joiner learns it once (the copies are duplicates). The id hashed the
    record as spelled: five ids, five samples of one rating."""
    from livelearn.loop import Loop
    from livelearn.registry import Registry

    (tmp_path / "r.jsonl").write_text(
        f'{{"user": "u1", "movie": "m1", "stars": 4, "ts": {T}}}\n'
        f'{{"ts": {T}, "stars": 4.0, "movie": "m1", "user": "u1"}}\n')
    (tmp_path / "r.csv").write_text(f"user,movie,stars,ts\nu1,m1,4,{T}\n"
                                    "u1,m1,4.0,2024-01-01T00:00:00Z\nu1,m1,4.5,2024-01-01\n")
    loop = Loop(log, Registry(tmp_path / "registry"), PIPELINE, tmp_path)
    for name in ("r.jsonl", "r.csv"):
        ingest(log, PIPELINE, "ratings", tmp_path / name)
    ids = [e["id"] for e in _topic(log, "ratings")]
    assert len(set(ids[:4])) == 1 and ids[4] != ids[0]
    loop.drain()
    assert sorted(s["labels"]["stars"] for s in _topic(log, "samples")) == [4.0, 4.5]
    assert dict(loop.dead_letters()) == {"duplicate": 3}


@pytest.mark.parametrize(("header", "row", "problem"), [
    (",user,movie,stars,ts", f"0,u1,m1,4,{T}", "column 1 has no name (pandas writes its "
                                                "index so: to_csv(index=False) leaves it out)"),
    ("user,movie,stars,ts,", f"u1,m1,4,{T},", "column 5 has no name (a comma at the end of "
                                               "the header?)")])
def test_a_csv_column_without_a_name_is_refused(log: SQLiteLog, tmp_path: Path, header: str,
                                                row: str, problem: str) -> None:
    """pandas's to_csv writes the index as a first column of no name: each event held it,
    as field "", in its payload and its derived id, so that the same events from another
    export (a filtered frame, JSON lines) got other ids and were learned twice."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    (tmp_path / "r.csv").write_text(f"{header}\n{row}\n")
    with pytest.raises(ConfigError) as e:
        ingest(log, PIPELINE, "ratings", tmp_path / "r.csv")
    assert str(e.value) == f"{tmp_path / 'r.csv'}: the CSV header's {problem}"
    assert _topic(log, "ratings") == []


@pytest.mark.parametrize("separator", [";", "\t"])
def test_a_csv_separated_by_another_character_than_commas_is_refused_naming_it(
        log: SQLiteLog, tmp_path: Path, separator: str) -> None:
    """Excel in many locales writes ';' between cells: the header was one column, and every
    row dead-lettered as having more cells than it (or missing the key)."""
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    header = separator.join(["user", "movie", "stars", "ts"])
    (tmp_path / "r.csv").write_text(f"{header}\nu1{separator}m1{separator}4{separator}{T}\n")
    with pytest.raises(ConfigError) as e:
        ingest(log, PIPELINE, "ratings", tmp_path / "r.csv")
    assert str(e.value) == (f"{tmp_path / 'r.csv'}: the CSV header is one column, "
                            f"{header!r}: ingest reads cells separated by commas, and this "
                            f"file's seem separated by {separator!r}")
    assert _topic(log, "ratings") == [] and _topic(log, "dead_letters") == []


def test_a_bad_time_is_named_by_the_streams_own_time_field(log: SQLiteLog,
                                                           tmp_path: Path) -> None:
    """A stream whose time field is `time` had a time in seconds, in the future or a float
    named as field 'ts', which the file does not have (a missing one was named 'time')."""
    timed = spec.Stream("ratings", {"movie": str, "stars": float}, key="user", ts="time")
    pipeline = spec.Pipeline(name="movies", feedback=spec.EventLabel(timed, label="stars"),
                             features=lambda e, rows, counts: {"movie": e.payload["movie"]},
                             learner=lambda: LinearRegression(bits=10), target="stars")
    (tmp_path / "r.csv").write_text("user,time,movie,stars\nu1,1704067200,m1,4\n"
                                    "u1,2999-01-01T00:00:00Z,m1,4\nu1,,m1,4\n")
    (tmp_path / "r.jsonl").write_text('{"user": "u1", "time": 1704067200000.5, '
                                      '"movie": "m1", "stars": 4}\n')
    for topic in pipeline.topics:
        log.create_topic(topic)
    errors = [*ingest(log, pipeline, "ratings", tmp_path / "r.csv").first_errors,
              *ingest(log, pipeline, "ratings", tmp_path / "r.jsonl").first_errors]
    assert len(errors) == 4
    for error in errors:
        assert "stream 'ratings', field 'time': " in error, error


def test_ingest_behind_the_joiners_watermark_warns_once_what_will_happen(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Last week's file ingested into a log whose joiner has read this week's: the joiner
    dead-letters every one of its events as late, and ingest said nothing. It warns once,
    with how many, what becomes of them and what to do; events after the watermark do not
    count, and a log whose joiner never ran gets no warning."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    week = 7 * 86_400_000

    def ratings(name: str, times: list[int]) -> str:
        (tmp_path / name).write_bytes(b"".join(orjson.dumps(
            {"user": f"u{i % 3}", "movie": f"m{i % 4}", "stars": i % 5, "ts": ts}) + b"\n"
            for i, ts in enumerate(times)))
        return str(tmp_path / name)

    args = [str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w")]
    log_url = f"sqlite:///{tmp_path / 'w' / 'log.db'}"
    assert main(["-q", "ingest", *args, "ratings",
                 ratings("now.jsonl", [T + week + 1000 * i for i in range(50)])]) == 0
    assert "watermark" not in capsys.readouterr().err  # no joiner yet
    assert main(["-q", "join", str(tmp_path / "p.py"), "--log", log_url, "--until-idle"]) == 0
    capsys.readouterr()
    old = ratings("old.jsonl", [T + 1000 * i for i in range(30)] +
                  [T + 2 * week + 1000 * i for i in range(5)])
    assert main(["-q", "ingest", *args, "ratings", old]) == 0
    out, err = capsys.readouterr()
    assert "35 events appended, 0 dead-lettered" in out
    watermark = "2024-01-08T00:00:49.000Z"  # the newest event the joiner read
    assert err.count("livelearn: warning:") == 1
    assert f"30 of the 35 events ingested into stream 'ratings' are behind the joiner's " \
           f"watermark ({watermark}" in err
    assert "will dead-letter each as late" in err and "livelearn replay" in err
    assert main(["-q", "join", str(tmp_path / "p.py"), "--log", log_url, "--until-idle"]) == 0
    log = SQLiteLog(tmp_path / "w" / "log.db")
    assert [d["reason"] for d in _topic(log, "dead_letters")] == ["late"] * 30
    log.close()
    capsys.readouterr()
    assert main(["-q", "ingest", *args, "ratings",
                 ratings("new.jsonl", [T + 3 * week + 1000 * i for i in range(5)])]) == 0
    assert "watermark" not in capsys.readouterr().err
