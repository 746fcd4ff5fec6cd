"""The commands for a user's own pipeline and data: ingest, replay, run.

Each takes PIPELINE (``module:attribute`` or ``path/to/file.py``) and keeps its
log (replay and run: and registry) in ``--workdir`` (default ``livelearn-NAME``)
unless ``--log`` or ``--registry`` say otherwise. Table paths are relative to ``--data``, by
default the folder of the pipeline's file.
"""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import math
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO, TypeVar

from livelearn.errors import BadInput, ConfigError, make_folder
from livelearn.events import utc

N = TypeVar("N", int, float)

#: Seconds between two lines of a long ingest's, replay's or run --until-idle's progress.
PROGRESS_S = 10.0
progress = logging.getLogger("livelearn.progress")

#: The PIPELINE argument's help, for every command that takes one (spec.load_pipeline).
PIPELINE_HELP = ("the pipeline: path/to/file.py (its PIPELINE; file.py:NAME for another "
                 "name) or module:attribute")
#: Where the --data options' table files are by default (spec.data_dir_of).
DATA_DEFAULT = "the pipeline file's folder; the current one for module:attribute"
#: The --log option's help, for every command that takes one.
LOG_HELP = ("the log: sqlite:///relative/path.db or sqlite:////absolute/path.db (with "
            "?retention_hours=N, the records appended more than N hours ago are deleted), "
            "memory://, kafka://host:port (with ?prefix= before every topic name, "
            "?replication=N for new topics, default 1, ?timeout= seconds the broker has to "
            "answer, default 30)")


def add_skip_lost(parser: argparse.ArgumentParser, roles: str) -> None:
    """The --skip-lost option of a command whose ``roles`` read the log."""
    parser.add_argument(
        "--skip-lost", action="store_true",
        help=f"where the log deleted records before {roles} read them (its retention: "
             f"stopped or behind for longer), go on from where the partition starts now "
             f"instead of stopping (Lost): each gap is logged (a WARNING naming the group, "
             f"topic, partition and offsets) and written to the dead_letters topic with "
             f"reason lost; the records after it are read as usual, and a restart does "
             f"not report the gap again")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("pipeline", metavar="PIPELINE",
                        help=PIPELINE_HELP)
    common.add_argument("--log", default=None, metavar="URL",
                        help=f"{LOG_HELP} (default: log.db in WORKDIR, every record kept)")
    i = sub.add_parser("ingest", parents=[common], help="append a file's events to a stream",
                       description="Append the records of FILE (JSON lines, CSV, or - for "
                       "stdin) to STREAM. Bad records go to the dead-letter topic with the "
                       "reason; they never stop the ingest. Events older than the log's joiner "
                       "has read (its watermark), which it will dead-letter as late, are "
                       "counted in a warning that says what to do. A long ingest logs how far "
                       "it is every 10 s; stopped with Ctrl-C, it says up to which line it "
                       "wrote and the --from-line that goes on.")
    _workdir(i, "the log goes")
    i.add_argument("stream", metavar="STREAM",
                   help="the stream the records are events of: one the pipeline declares, "
                        "or predictions for impressions from history (a feedback join)")
    i.add_argument("file", metavar="FILE",
                   help="a file of JSON lines (one object a line, whatever its suffix: a JSON "
                        "array, Parquet, gzip or CSV is refused), a .csv file (or another "
                        "with --format csv), or - for stdin (JSON lines)")
    i.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help=f"folder of the table files, for impressions (default: {DATA_DEFAULT})")
    i.add_argument("--format", choices=("jsonl", "csv"), default=None,
                   help="the file's format (default: from its suffix; stdin: jsonl)")
    i.add_argument("--from-line", type=_line_number, default=1, metavar="N",
                   help="skip the records that start before line N of FILE (the file's line "
                        "numbers, as the dead letters give them): an ingest stopped with "
                        "Ctrl-C says from which line to go on (default: 1)")
    i.set_defaults(func=_ingest)
    roles = argparse.ArgumentParser(add_help=False, parents=[common])
    _workdir(roles, "the log and the registry go")
    roles.add_argument("--registry", type=Path, default=None, metavar="DIR",
                       help="the model registry (default: WORKDIR/registry)")
    roles.add_argument("--data", type=Path, default=None, metavar="DIR",
                       help=f"folder of the table files (default: {DATA_DEFAULT})")
    add_skip_lost(roles, "the joiner or the trainer")
    live = argparse.ArgumentParser(add_help=False)
    live.add_argument("--no-serve", action="store_true", help="do not start the server")
    live.add_argument("--host", default="127.0.0.1",
                      help="address to serve on (default: %(default)s)")
    live.add_argument("--port", type=port_number, default=8000,
                      help="TCP port to serve on, 0 to 65535 (0: any free one) "
                           "(default: %(default)s)")
    r = sub.add_parser("replay", parents=[roles, live],
                       help="learn from history as fast as possible",
                       description="Ingest history and run it through the live joiner, "
                       "trainer and gate; report prequential metrics over event time. With "
                       "--then-live, go on as `livelearn run` does: --no-serve, --host and "
                       "--port are for that.")
    r.add_argument("--events", nargs="+", action="extend", required=True,
                   metavar="STREAM=FILE",
                   help="files to replay (after one --events or in several), ingested in this "
                        "order except that predictions (impressions) go last, once the "
                        "feedback they count is in")
    r.add_argument("--then-live", action="store_true",
                   help="keep the last windows open and go on with live events as `livelearn "
                        "run` does: join, train and judge what comes into the log and serve "
                        "/predict, /feedback and the dashboard (/dashboard)")
    r.add_argument("--report-json", type=Path, default=None, metavar="PATH",
                   help="write the report as JSON here")
    r.add_argument("--report", type=Path, default=None, metavar="PATH",
                   help="write the report as HTML here (default: WORKDIR/replay.html)")
    r.add_argument("--bucket-ms", type=_bucket_width, default=None, metavar="MS",
                   help="width of the report's time buckets, in milliseconds of event time "
                        "(default: chosen from the span)")
    r.set_defaults(func=_replay)
    u = sub.add_parser("run", parents=[roles, live],
                       help="every role of a pipeline in one process",
                       description="Join, train and judge on the live log and serve "
                       "predictions and the dashboard over HTTP, all in one process; feed it "
                       "with `livelearn ingest` or the server's /feedback.")
    u.add_argument("--until-idle", action="store_true",
                   help="treat the log as complete: learn all of it, stop (no server)")
    u.set_defaults(func=_run)


def _workdir(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                        help=f"where {what} (default: livelearn-NAME)")


def number_of(text: str, kind: Callable[[str], N], fits: Callable[[N], bool],
              expected: str) -> N:
    """An option's value: ``kind(text)`` if it ``fits``; else argparse's error, saying
    what was ``expected``."""
    try:
        value: N | None = kind(text)
    except ValueError:
        value = None
    if value is None or not fits(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def port_number(text: str) -> int:
    """--port: a whole number in [0, 65535]."""
    return number_of(text, int, lambda v: 0 <= v <= 65535, "a port number in [0, 65535]")


def positive_seconds(text: str) -> float:
    """A number of seconds above 0 (--poll)."""
    return number_of(text, float, lambda v: 0 < v < math.inf, "a number of seconds above 0")


def _line_number(text: str) -> int:
    """--from-line: a whole number from 1."""
    return number_of(text, int, lambda v: v >= 1, "a line number from 1")


def _bucket_width(text: str) -> int:
    """--bucket-ms: at most the largest event time, so a bucket's end is still a time
    (the report's JSON holds it as a 64-bit integer)."""
    from livelearn.events import MAX_TS_MS

    return number_of(text, int, lambda v: 0 < v <= MAX_TS_MS,
                     f"a whole number of ms from 1 to {MAX_TS_MS}")


def _paths(args: argparse.Namespace, pipeline: Any = None) -> tuple[Any, Path, Any]:
    """The pipeline (loaded, unless given), its work directory and its log, from the
    common options."""
    from livelearn.log import open_log
    from livelearn.spec import load_pipeline

    pipeline = pipeline or load_pipeline(args.pipeline)
    workdir = Path(args.workdir or f"livelearn-{pipeline.name}")
    if args.log is None:  # else made only if something goes in it (a registry, a report)
        make_folder(workdir, "work folder")
    log = open_log(args.log or f"sqlite:///{(workdir / 'log.db').resolve()}")
    for topic in pipeline.topics:
        log.create_topic(topic, pipeline.partitions)
    return pipeline, workdir, log


def _registry_and_data(args: argparse.Namespace, workdir: Path) -> tuple[Any, Path]:
    from livelearn.registry import Registry
    from livelearn.spec import data_dir_of

    return (Registry(args.registry or workdir / "registry"),
            args.data or data_dir_of(args.pipeline))


def _ingest(args: argparse.Namespace) -> int:
    from livelearn.ingest import ingest
    from livelearn.spec import data_dir_of

    if args.log is not None and args.log.startswith("memory:"):  # gone when ingest ends
        raise ConfigError(f"--log {args.log}: the in-memory log lasts as long as the command, "
                          f"so the events ingested into it would be lost when it ends; "
                          f"ingest into sqlite:///PATH or kafka://HOST:PORT, or replay "
                          f"--log memory:// --events {args.stream}=FILE to learn from them in "
                          f"one process")
    pipeline, _, log = _paths(args)
    past = _joiner_past(log, pipeline, args.stream)
    ingesting = _Ingesting(args.from_line)
    try:
        result = ingest(log, pipeline, args.stream, args.file, args.format,
                        data_dir=args.data or data_dir_of(args.pipeline),
                        late_before=None if past is None else past[1],
                        from_line=args.from_line, progress=functools.partial(
                            ingesting, args.stream, args.file))
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: what was written, and how to go on
        print(f"stopped. {ingesting.written(args.file)}", flush=True)
        raise
    _say_ingested(args.stream, result.events, result.dead, result.first_errors or [])
    if result.dead:
        say_read_them(args, sys.stderr, "  ")
    if past is not None and result.behind:
        _say_behind(args, pipeline, result.behind, result.events, past[0])
    _none_accepted({f"{args.stream}={args.file}": (result.events, result.dead)})
    return 0


class _Ingesting:
    """How far an ingest is: logged every PROGRESS_S seconds (``ingest``'s ``progress``, of
    a source and stream), and said if it is stopped."""

    def __init__(self, from_line: int = 1):
        self.from_line, self.due = from_line, Every(PROGRESS_S)
        self.result: Any = None  # ingest.Ingested, kept up to date by ingest

    def __call__(self, stream: str, source: str, result: Any, share: float | None) -> None:
        self.result = result
        if result.through >= self.from_line and self.due():  # something read, and time
            read = "" if share is None else f" ({share:.0%} of the file)"
            progress.info("ingesting %s into stream '%s': line %d%s, %d events and %d dead "
                          "letters written", _source_name(source), stream, result.through,
                          read, result.events, result.dead)

    def written(self, source: str) -> str:
        """What was written of ``source`` when the ingest stopped, and how to go on."""
        from livelearn.ingest import Ingested, written_before

        result = self.result or Ingested(through=self.from_line - 1)
        return written_before(result, source, result.through + 1)


def _source_name(source: str) -> str:
    return "stdin" if source == "-" else source


class Every:
    """Says, when called, whether ``seconds`` have passed since it last said so (or since it
    was made): a command of a few seconds says nothing of its progress."""

    def __init__(self, seconds: float):
        self.seconds, self.next = seconds, time.monotonic() + seconds

    def __call__(self) -> bool:
        now = time.monotonic()
        if now < self.next:
            return False
        self.next = now + self.seconds
        return True


def _say_learning(due: Every, loop: Any) -> None:
    """Log how far the joiner and the trainer of ``loop`` are, if ``due``."""
    if due():
        read, held = loop.read()
        version = loop.trainer.version
        progress.info("learning: the joiner read %d of the %d input records in the log (%.0f%%), "
                      "the trainer learned %d samples, latest version v%d", read, held,
                      100 * read / max(held, 1), loop.trainer.samples,
                      version.id if version else 0)


def _joiner_past(log: Any, pipeline: Any, stream: str) -> tuple[int, int] | None:
    """The watermark of the joiner's last checkpoint in ``log`` and the event time before
    which it dead-letters an event of ``stream``: a prediction whose window ended before
    the watermark (late), feedback that came after its window (late, or orphan where the
    joiner no longer remembers it), an event of the labelled stream before the watermark
    (late; its window is 0). None for a stream only counted, or with no watermark yet."""
    from livelearn.join.runner import committed_watermark

    labelled = pipeline.labelled
    if labelled is not None and stream != labelled.name:
        return None  # counted: not dead-lettered, counted from then on
    watermark = committed_watermark(log)
    if watermark is None:
        return None
    return watermark, watermark - pipeline.feedback.window_ms


def _say_behind(args: argparse.Namespace, pipeline: Any, behind: int, events: int,
                watermark: int) -> None:
    """Warn, once, that ``behind`` of the ``events`` ingested lie behind the joiner's
    ``watermark`` (its last checkpoint): what becomes of them and what to do."""
    window = pipeline.feedback.window_ms
    reason = "late" if args.stream == "predictions" or pipeline.labelled else "late or orphan"
    file = "FILE" if args.file == "-" else shlex.quote(str(args.file))
    print(f"livelearn: warning: {behind} of the {events} events ingested into stream "
          f"'{args.stream}' are behind the joiner's watermark ({utc(watermark)}, ts "
          f"{watermark}, of its last checkpoint in this log)"
          f"{f' by more than the join window of {window} ms' if window else ''}: the joiner "
          f"will dead-letter each as {reason}, and nothing learns from them. To learn from "
          f"them, replay them (with the other streams' files of their time) into a new log "
          f"and registry: livelearn replay {shlex.quote(args.pipeline)} --events "
          f"{args.stream}={file} --workdir NEW_FOLDER", file=sys.stderr, flush=True)


def _replay(args: argparse.Namespace) -> int:
    from livelearn.files import check_writable
    from livelearn.replay import check_once

    sources = [source_pair(text) for text in args.events]
    check_once(sources)
    for report in (args.report_json, args.report):  # fail now, not after the replay
        if report is not None:
            check_writable(report, "report")
    # the port now, held while the history is replayed: not one taken meanwhile, nor one
    # in use, found once the replay's roles have taken over the groups of a running `run`
    sock = bound_socket(args.host, args.port) if args.then_live and not args.no_serve else None
    try:
        return _replay_on(args, sources, sock)
    finally:
        if sock is not None:  # closed already if it was served on
            sock.close()


def _replay_on(args: argparse.Namespace, sources: list[tuple[str, str]],
               sock: socket.socket | None) -> int:
    """Replay ``sources`` and, with --then-live, go on live, serving on ``sock``."""
    from livelearn.ingest import check_source, check_stream
    from livelearn.loop import tune_gc
    from livelearn.prequential import write_html
    from livelearn.replay import replay
    from livelearn.spec import load_pipeline
    from livelearn.ui.report import write_json

    pipeline = load_pipeline(args.pipeline)
    for stream, path in sources:  # now, not after the first files are in the log
        check_stream(pipeline, stream)
        check_source(path)
    pipeline, workdir, log = _paths(args, pipeline)
    _refuse_replayed(log, [stream for stream, _ in sources], pipeline.inputs,
                     _how_to_replay(args, workdir))
    registry, data = _registry_and_data(args, workdir)
    tune_gc()
    try:
        report, loop = replay(log, registry, pipeline, sources, data, final=not args.then_live,
                              bucket_ms=args.bucket_ms, skip_lost=args.skip_lost,
                              ingesting=_Ingesting(), learning=functools.partial(
                                  _say_learning, Every(PROGRESS_S)))
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: a replay cannot go on
        print(f"stopped: a replay stopped partway cannot go on (part of a file may be in "
              f"the log, and its report would miss what was learned before): "
              f"{_how_to_replay(args, workdir)}", flush=True)
        raise
    if args.report_json is not None:
        write_json(args.report_json, report)
    html = write_html(args.report or workdir / "replay.html", f"livelearn replay: "
                      f"{pipeline.name}", report)
    say_inputs(report)
    value = report["metric_value"]  # None without a sample, or for AUC of one class
    said = f"{value:.4f}" if value is not None else \
        f"- ({report['metric_note']})" if report["samples"] else "-"
    print(f"{report['events']} events, {report['samples']} samples, "
          f"{dead_letters_said(report['dead_letters'])}, {report['metric']} {said}, "
          f"{report['events_per_s']:.0f} "
          f"events/s; report {html}", flush=True)
    if sum(report["dead_letters"].values()):
        say_read_them(args)
    say_history_checks(report, pipeline.feedback.allowed_lateness_ms)
    if not args.then_live:  # live, the windows still open may yet give samples
        _none_learned(report)
        return 0
    loops = _resuming(args, loop, pipeline, log, registry, data)
    try:
        _live(args, loops, pipeline, log, registry, data, sock)
    except KeyboardInterrupt:  # a replay cannot go on: run can
        _say_stopped(loops.role, "`livelearn run` with the same work folder (or --log and "
                           "--registry) resumes")
        raise
    return 0


def _refuse_replayed(log: Any, streams: list[str], inputs: list[str], again: str) -> None:
    """ConfigError if the log already holds events of these streams, or its joiner has
    read events of its ``inputs`` (another stream's, replayed alone before): replayed
    now, they would all be late or duplicates, and the report would not be this
    history's. ``again`` says how to replay into a new log (``_how_to_replay``)."""
    for stream in streams:
        held = sum(log.end_offset(*tp) for tp in log.topic_partitions([stream]))
        if held:
            raise ConfigError(f"the log already holds {held} events of stream '{stream}': an "
                              f"earlier replay, or one stopped partway. A replay cannot go on "
                              f"from it (part of a file may be in, and its report would miss "
                              f"what was learned before): {again}. To learn from new events "
                              f"after a replay that finished, `livelearn ingest` them: "
                              f"`livelearn run` goes on from where it stopped")
    read: dict[str, int] = {}
    for (topic, _), offset in log.committed("joiner").offsets.items():
        if offset and topic in inputs:
            read[topic] = read.get(topic, 0) + offset
    if read:
        raise ConfigError(f"the log's joiner already read {sum(read.values())} events of "
                          f"stream(s) {', '.join(map(repr, sorted(read)))} (an earlier replay "
                          f"or run): the events replayed now would be late. Replay every "
                          f"stream's file in one command: {again}")


def _how_to_replay(args: argparse.Namespace, workdir: Path) -> str:
    """How to replay into a new log and registry, for the options given."""
    if args.log is None and args.registry is None:
        return (f"to replay, delete the work folder (rm -r {shlex.quote(str(workdir))}) or "
                f"give another --workdir, and run the same command again")
    new = ["another --log (a new SQLite file; for Kafka, another ?prefix=)"
           if args.log is not None else "another --workdir (where the log is)",
           "another --registry" if args.registry is not None
           else "another --workdir (where the registry is)"]
    return f"to replay, give {' and '.join(new)}, and run the same command again"


def say_inputs(report: dict[str, Any]) -> None:
    """What each input of a replay's ``report`` gave, with its first errors."""
    for source, given in report["inputs"].items():
        _say_ingested(source, given["events"], given["dead"], given["first_errors"])


def say_history_checks(report: dict[str, Any], lateness_ms: int) -> None:
    """After a replay's ``report``: what to do where many events were late, or came after
    samples of later times were counted; BadInput naming an input whose every record was
    dead-lettered (``_none_accepted``)."""
    _say_late(report["dead_letters"].get("late", 0), report["events"], lateness_ms)
    _say_late_counted(report["late_counted"], lateness_ms)
    _none_accepted({source: (given["events"], given["dead"])
                    for source, given in report["inputs"].items()})


def _say_ingested(source: str, events: int, dead: int, first_errors: list[str]) -> None:
    """What an ingest of ``source`` gave, and the first reasons of its dead letters."""
    print(f"{source}: {events} events appended, {dead} dead-lettered", flush=True)
    for error in first_errors:
        print(f"  {error}", file=sys.stderr, flush=True)


def say_read_them(args: argparse.Namespace, file: TextIO | None = None, indent: str = "",
                  ) -> None:
    """Say which command prints the dead letters a command (its ``args``) wrote, each with
    its reason: nothing for the in-memory log, gone with the command."""
    if read_them(args) is not None:
        print(f"{indent}every dead letter with its reason: {read_them(args)}",
              file=file or sys.stdout, flush=True)


def read_them(args: argparse.Namespace) -> str | None:
    """The `livelearn dead-letters` command that reads the log a command's ``args`` name;
    None for the in-memory log, which no other command reads, or a command of no pipeline."""
    if not hasattr(args, "pipeline") or (getattr(args, "log", None) or "").startswith(
            "memory:"):
        return None
    where = ""
    if getattr(args, "log", None) is not None:
        where = f" --log {shlex.quote(args.log)}"
    elif getattr(args, "workdir", None) is not None:
        where = f" --workdir {shlex.quote(str(args.workdir))}"
    return f"livelearn dead-letters {shlex.quote(args.pipeline)}{where}"


def _none_accepted(given: dict[str, tuple[int, int]]) -> None:
    """BadInput naming the inputs (``STREAM=FILE``: (events, dead letters)) that gave no
    event though they held records, so that a script does not take the command for one
    that worked; an input with some events, or none at all, is no error."""
    rejected = [f"{source} ({dead} record{'' if dead == 1 else 's'})"
                for source, (events, dead) in given.items() if dead and not events]
    if rejected:
        raise BadInput(f"no event was accepted from {', '.join(rejected)}: every record was "
                       f"dead-lettered (the first errors are above, each one's reason in the "
                       f"dead_letters topic); is it that stream's file, with the fields the "
                       f"pipeline declares?")


def _none_learned(report: dict[str, Any]) -> None:
    """BadInput where a replay took events but learned from no sample, each dead-lettered
    by the joiner or the trainer (a features or label function that fails on every event,
    labels of the wrong kind): a replay that learned nothing is no success to a script."""
    dead = {reason: n for reason, n in report["dead_letters"].items()
            if not reason.endswith("_at_ingest")}
    if report["events"] and not report["samples"] and dead:
        raise BadInput(f"no sample was learned from the {report['events']} events: "
                       f"{dead_letters_said(dead)} (`livelearn dead-letters` shows why); "
                       f"does the pipeline's features or label function fail on every event?")


def _say_late(late: int, events: int, lateness_ms: int) -> None:
    """Say what to do where ``late`` dead letters are 1% of the ``events`` or more: most
    likely a file not in time order, which a replay mostly dead-letters (the watermark
    follows the newest event read)."""
    if late and late * 100 >= events:
        print(f"{late} events were late (older, by more than the allowed lateness of "
              f"{lateness_ms} ms, than one read before them): is a file not in time order? "
              f"Sort it by its time field, or give the pipeline's allowed_lateness_ms the "
              f"lateness its events come with", flush=True)


def _say_late_counted(late: int, lateness_ms: int) -> None:
    """Say what to do where ``late`` events of a counted stream came after a sample of a
    later ts was emitted: not dead-lettered (counted from then on), they are missing from
    the counts of such samples."""
    if late:
        events = "1 event of a counted stream" if late == 1 else \
            f"{late} events of counted streams"
        print(f"{events} came after samples of later times were emitted (older, by more than "
              f"the allowed lateness of {lateness_ms} ms, than events read before them): "
              f"those samples' counts of their keys miss them. Is a file not in time order? Sort "
              f"it by its time field, or give the pipeline's allowed_lateness_ms the "
              f"lateness its events come with", flush=True)


def learned(trainer: Any, dead: dict[str, int]) -> str:
    """What `run --until-idle` and `train --until-idle` say at their end: the samples
    learned, the latest version and the dead letters written (``dead``, by reason)."""
    version = trainer.version.id if trainer.version else 0
    return (f"{trainer.samples} samples learned; latest version v{version}; this run wrote "
            f"{dead_letters_said(dead)}")


def dead_letters_said(by_reason: Mapping[str, int]) -> str:
    """``{"late": 2, "orphan": 1}`` as ``3 dead letters (late 2, orphan 1)``: how every
    command's summary says them."""
    total = sum(by_reason.values())
    if not total:
        return "0 dead letters"
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items()) if n)
    return f"{total} dead letter{'' if total == 1 else 's'} ({reasons})"


def _run(args: argparse.Namespace) -> int:
    from livelearn.loop import Loop, tune_gc

    pipeline, workdir, log = _paths(args)
    registry, data = _registry_and_data(args, workdir)
    # the port first: a second `run` on the port of one running fails before its roles
    # take over the running one's (which would stop at their next write)
    sock = None if args.until_idle or args.no_serve else bound_socket(args.host, args.port)
    loop = Loop(log, registry, pipeline, data, skip_lost=args.skip_lost)
    if (resumed := loop.resumed()) is not None:
        print(resumed, flush=True)
    tune_gc()
    if args.until_idle:
        try:
            loop.drain(final=True, progress=functools.partial(
                _say_learning, Every(PROGRESS_S), loop))
        except KeyboardInterrupt:
            _say_stopped(loop, "`livelearn run` again resumes")
            raise
        print(learned(loop.trainer, loop.dead_letters()))
        return 0
    loops = _resuming(args, loop, pipeline, log, registry, data)
    try:
        _live(args, loops, pipeline, log, registry, data, sock)
    except KeyboardInterrupt:
        _say_stopped(loops.role, "`livelearn run` again resumes")
        raise
    return 0


def _resuming(args: argparse.Namespace, loop: Any, pipeline: Any, log: Any, registry: Any,
              data: Path) -> Any:
    """``loop``, made again from the roles' checkpoints once the log answers after it
    failed under them (outage.Resuming), as `livelearn run` makes it."""
    from livelearn.loop import Loop
    from livelearn.outage import Resuming

    return Resuming(lambda: Loop(log, registry, pipeline, data, skip_lost=args.skip_lost),
                    "the joiner and the trainer", loop)


def _say_stopped(loop: Any, resumes: str) -> None:
    """What a live loop stopped with Ctrl-C leaves, and which command ``resumes`` it."""
    version = loop.trainer.version
    print(f"stopped; the newest version is v{version.id if version else 0} (what was "
          f"learned since is learned again): {resumes} from it and from the joiner's "
          f"checkpoint, losing nothing", flush=True)


def _live(args: argparse.Namespace, loops: Any, pipeline: Any, log: Any, registry: Any,
          data: Path, sock: socket.socket | None = None) -> None:
    """Turn the roles (``loops``: a Resuming Loop) on the live log until interrupted and,
    unless ``--no-serve``, serve /predict, /feedback and the dashboard meanwhile (on
    ``sock``, if bound already). A log that fails under the roles is waited for, and they
    go on from their checkpoints."""
    if args.no_serve:
        print("live: waiting for events (Ctrl-C to stop)", flush=True)
        _forever(loops)
        return
    from livelearn.serve.app import create_app

    loops.role.gate.step()  # approve the first version, so the server can answer at once
    stop, failed = threading.Event(), threading.Event()
    loops.stop = stop  # a wait for the log ends with the server
    errors: list[BaseException] = []

    def roles() -> None:  # a role that fails (fenced off, its log damaged) stops the server
        try:
            _forever(loops, stop)
        except BaseException as e:
            errors.append(e)
            failed.set()

    thread = threading.Thread(target=roles, name="roles", daemon=True)
    thread.start()
    try:
        serve_http(create_app(pipeline, log, registry, data), args.host, args.port, failed,
                   sock)
    finally:
        stop.set()
        thread.join(10)
    if errors:
        raise errors[0]


def serve_http(app: Any, host: str, port: int, until: threading.Event | None = None,
               sock: socket.socket | None = None) -> None:
    """Serve ``app`` (the prediction server) until interrupted (or ``until`` is set), saying
    once where, and where its dashboard is, when it is up; ConfigError if ``host:port``
    cannot be bound (another server there). ``sock``: ``host:port`` bound already."""
    import uvicorn

    sock = sock or bound_socket(host, port)
    port = sock.getsockname()[1]  # the one chosen, for port 0
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    stopped = threading.Event()
    threading.Thread(target=_watch, args=(server, f"http://{host}:{port}", stopped, until),
                     name="server-watch", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        stopped.set()
        sock.close()


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` for the server, listening (so held: another
    server cannot bind it, SO_REUSEADDR or not; a connection made before the server
    serves waits for it); ConfigError if it cannot be.

    It says IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and
    without it every small response waits ~40 ms for a delayed ACK (the demo ran 8x slower).
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                         socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen()  # bound alone, another SO_REUSEADDR socket may bind it and listen
    except OSError as e:
        sock.close()
        hint = (" (is another server there? choose another --port)"
                if e.errno == errno.EADDRINUSE else " (is --host an address of this machine?)")
        raise ConfigError(f"cannot serve on {host}:{port}: {e.strerror or e}{hint}") from None
    return sock


def _watch(server: Any, url: str, stopped: threading.Event,
           until: threading.Event | None) -> None:
    """Say once where ``server`` serves, when it is up; stop it when ``until`` is set."""
    said = False
    while not stopped.wait(0.05):
        if server.started and not said:
            print(f"serving on {url} (Ctrl-C to stop)\ndashboard: {url}/dashboard", flush=True)
            said = True
        if until is not None and until.is_set():
            server.should_exit = True
        elif said and until is None:
            return


def _forever(loops: Any, stop: threading.Event | None = None) -> None:
    """Turn the roles (a Resuming Loop) until ``stop`` is set (or forever), resting when
    there is nothing new; once stopped, the joiner writes what it has not yet."""
    while stop is None or not stop.is_set():
        if not loops.turn(lambda loop: loop.turn()):
            time.sleep(0.05)
    loops.role.joiner.write_pending()


def source_pair(text: str) -> tuple[str, str]:
    stream, sep, path = text.partition("=")
    if not sep or not stream or not path:
        raise ConfigError(f"--events {text!r}: expected STREAM=FILE")
    return stream, path
