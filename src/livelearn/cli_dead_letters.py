"""`livelearn dead-letters`: why a pipeline's events were dead-lettered, read from the
``dead_letters`` topic of its log (the work folder's SQLite file, or ``--log``).

It prints the count by reason over the whole topic, then the newest letters (of a reason,
of a stream), each with its reason, its stream, where its record was read (``FILE:LINE``
at ingest, ``topic/partition@offset`` in the log), the detail and the record; ``--json``
prints the letters as stored, one JSON object a line. It only reads: no consumer group is
committed, no topic made, nothing appended. It holds the newest ``--last`` letters of each
partition and the counts, whatever the topic's length.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from livelearn.cli_data import LOG_HELP, PIPELINE_HELP, dead_letters_said, number_of
from livelearn.errors import ConfigError, Lost, NotFound
from livelearn.events import Reason
from livelearn.log.base import Log, Record, TopicPartition
from livelearn.spec import DEAD_LETTERS

#: Letters printed by default (the newest).
LAST = 20
#: Characters of a letter's record printed at most.
RECORD_CHARS = 200
#: Records read from the log at a time.
BATCH = 10_000


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = sub.add_parser(
        "dead-letters", help="read why events were dead-lettered, with their records",
        description="Read the dead_letters topic of the pipeline's log: print the count by "
        "reason over the whole topic, then the newest letters (--last, of --reason and "
        "--stream), oldest first, each as its reason, its stream and where its record was "
        "read (FILE:LINE at ingest, topic/partition@offset in the log), the detail, and the "
        f"record, its first {RECORD_CHARS} characters. It only reads the log: it commits no "
        "consumer group and writes nothing.")
    d.add_argument("pipeline", metavar="PIPELINE", help=PIPELINE_HELP)
    where = d.add_mutually_exclusive_group()
    where.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                       help="the work folder whose log.db is read (default: livelearn-NAME)")
    where.add_argument("--log", default=None, metavar="URL", help=LOG_HELP)
    d.add_argument("--reason", choices=[str(r) for r in Reason], default=None,
                   help="only the letters of this reason")
    d.add_argument("--stream", default=None, metavar="S",
                   help="only the letters of this stream (a pipeline's stream, predictions "
                        "or samples)")
    d.add_argument("--last", type=_count, default=LAST, metavar="N",
                   help="how many of the newest letters to print, 0 for only the counts "
                        "(default: %(default)s)")
    d.add_argument("--json", action="store_true",
                   help="print the letters as stored, one JSON object a line (for scripts and "
                        "jq); the counts go to stderr")
    d.set_defaults(func=_dead_letters)


def _count(text: str) -> int:
    """--last: a whole number >= 0."""
    return number_of(text, int, lambda v: v >= 0, "a whole number >= 0")


@dataclass
class Letters:
    """What a read of the dead_letters topic found: the ``counts`` by reason over the whole
    topic, how many letters ``matched`` the filter, the ``newest`` of those (at most the
    number asked, oldest first), and how many the log's retention deleted while it read
    (``skipped``). ``topic`` is False where the log has no dead_letters topic."""

    counts: Counter[str] = field(default_factory=Counter)
    matched: int = 0
    newest: list[tuple[Record, dict[str, Any]]] = field(default_factory=list)
    skipped: int = 0
    topic: bool = True


def read_letters(log: Log, wanted: Callable[[Mapping[str, Any]], bool], last: int) -> Letters:
    """Read every dead letter ``log`` holds now (up to each partition's end when the read
    starts): count them by reason, and keep the newest ``last`` that are ``wanted``, ordered
    by the time the log received them, then partition and offset."""
    found = Letters()
    try:
        partitions = log.topic_partitions([DEAD_LETTERS])
    except NotFound:
        found.topic = False
        return found
    kept: list[tuple[Record, dict[str, Any]]] = []
    for tp in partitions:
        kept += _read_partition(log, tp, wanted, last, found)
    kept.sort(key=lambda item: (item[0].appended_ms or 0, item[0].partition, item[0].offset))
    found.newest = kept[len(kept) - last:] if last else []
    return found


def _read_partition(log: Log, tp: TopicPartition, wanted: Callable[[Mapping[str, Any]], bool],
                    last: int, found: Letters) -> deque[tuple[Record, dict[str, Any]]]:
    """The newest ``last`` wanted letters of partition ``tp``, counting each in ``found``."""
    newest: deque[tuple[Record, dict[str, Any]]] = deque(maxlen=last)
    offset, end = log.start_offset(*tp), log.end_offset(*tp)
    while offset < end:
        try:
            records = log.read(*tp, offset, BATCH)
        except Lost:  # deleted by the log's retention since: go on from where it starts
            start = log.start_offset(*tp)
            if start <= offset:
                raise
            found.skipped += start - offset
            offset = start
            continue
        for record in records:
            if record.offset >= end:
                return newest
            letter = _letter(record)
            found.counts[str(letter.get("reason"))] += 1
            if wanted(letter):
                found.matched += 1
                newest.append((record, letter))
        if not records:
            break
        offset = records[-1].offset + 1
    return newest


def _letter(record: Record) -> dict[str, Any]:
    """The dead letter a record holds; one of reason ``unreadable`` for a record that is no
    dead letter of livelearn's (another producer's), holding its text."""
    try:
        letter = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        letter = None
    if isinstance(letter, dict) and isinstance(letter.get("reason"), str):
        return letter
    return {"reason": "unreadable", "detail": "not a dead letter of livelearn's (a JSON "
            "object with a reason)", "stream": "", "source": f"{record.topic}/"
            f"{record.partition}@{record.offset}",
            "event": record.value.decode("utf-8", errors="replace")}


def _dead_letters(args: argparse.Namespace) -> int:
    from livelearn.log import open_log
    from livelearn.spec import load_pipeline

    pipeline = load_pipeline(args.pipeline)
    url, where = _log_url(args, pipeline.name)
    log = open_log(url)
    try:
        found = read_letters(log, _filter(args.reason, args.stream), args.last)
    finally:
        log.close()
    _say(found, where, args, [t for t in pipeline.topics if t != DEAD_LETTERS])
    return 0


def _log_url(args: argparse.Namespace, name: str) -> tuple[str, str]:
    """The URL of the log to read and how to name it; ConfigError for a log that is not
    there (none is made: the command writes nothing) or that no other command shares."""
    from livelearn.log.sqlite import file_of

    if args.log is None:
        workdir = args.workdir or Path(f"livelearn-{name}")
        path = workdir / "log.db"
        if not path.is_file():
            raise ConfigError(f"dead-letters: no log in work folder {workdir} (no log.db "
                              f"there): is it the --workdir of a replay, run or ingest of "
                              f"pipeline '{name}'? Or give the log with --log URL")
        return f"sqlite:///{path.resolve()}", str(path.resolve())
    if args.log.startswith("memory:"):
        raise ConfigError(f"--log {args.log}: the in-memory log is this process's own and "
                          f"holds no other command's dead letters; give the log they were "
                          f"written to (the work folder's, sqlite:///PATH or kafka://HOST:PORT)")
    if args.log.startswith("sqlite:") and file_of(args.log) \
            and not Path(file_of(args.log)).is_file():
        raise ConfigError(f"dead-letters: no log at {file_of(args.log)} (--log {args.log})")
    return args.log, args.log


def _filter(reason: str | None, stream: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """Whether a letter is of ``reason`` and ``stream`` (None: any)."""
    return lambda letter: ((reason is None or letter.get("reason") == reason)
                           and (stream is None or letter.get("stream") == stream))


def _say(found: Letters, where: str, args: argparse.Namespace, streams: list[str]) -> None:
    """Print what ``found`` holds: the counts (on stderr with --json), then the letters."""
    counts = sys.stderr if args.json else sys.stdout
    total = sum(found.counts.values())
    deleted = (f" ({found.skipped} more deleted by the log's retention while this read)"
               if found.skipped else "")
    if not total:
        why = "" if found.topic else f" (it has no {DEAD_LETTERS} topic)"
        print(f"no dead letters in {where}{why}{deleted}", file=counts, flush=True)
        return
    print(f"{dead_letters_said(found.counts)} in {where}{deleted}", file=counts, flush=True)
    if args.json:
        for record, letter in found.newest:
            raw = letter.get("reason") != "unreadable"
            sys.stdout.write(record.value.decode() if raw else orjson.dumps(letter).decode())
            sys.stdout.write("\n")
        return
    if not args.last:
        return
    chosen = " and ".join(f"{what} {value}" for what, value in
                          (("reason", args.reason), ("stream", args.stream)) if value)
    if not found.matched:
        unknown = (f" (the pipeline's streams: {', '.join(sorted(streams))})"
                   if args.stream is not None and args.stream not in streams else "")
        print(f"none with {chosen}{unknown}")
        return
    of = f" of {found.matched} with {chosen}" if chosen else ""
    print(f"the newest {len(found.newest)}{of}, oldest first:")
    for _, letter in found.newest:
        print(_shown(letter))


def _shown(letter: Mapping[str, Any]) -> str:
    """A letter in two lines: reason, stream, source and detail; then its record."""
    event = letter.get("event")
    record = event if isinstance(event, str) else orjson.dumps(event).decode()
    if len(record) > RECORD_CHARS:
        record = f"{record[:RECORD_CHARS]}... ({len(record)} characters)"
    head = (f"{letter.get('reason')} {letter.get('stream') or '-'} "
            f"{letter.get('source') or '-'}: {letter.get('detail')}")
    return f"{_one_line(head)}\n  {_one_line(record)}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str) -> str:
    """``text`` with its control characters (newlines, escapes to the terminal) written as
    Python writes them in a string (``\\n``, ``\\x1b``).

    >>> _one_line("a\\nb\\x1b[2J")
    'a\\\\nb\\\\x1b[2J'
    """
    return _CONTROL.sub(lambda m: repr(m[0])[1:-1], text)
