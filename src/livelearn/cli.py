"""The `livelearn` command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from livelearn import __version__
from livelearn.cli_data import (
    DATA_DEFAULT,
    LOG_HELP,
    PIPELINE_HELP,
    add_skip_lost,
    dead_letters_said,
    learned,
    number_of,
    port_number,
    positive_seconds,
    read_them,
    utc,
)
from livelearn.cli_data import add_parsers as add_data_parsers
from livelearn.cli_dead_letters import add_parsers as add_dead_letters_parsers
from livelearn.cli_examples import add_parsers as add_examples_parsers
from livelearn.cli_study import add_parsers as add_study_parsers
from livelearn.errors import ConfigError, LivelearnError
from livelearn.events import is_digits
from livelearn.outage import Resuming

DESCRIPTION = """\
livelearn: real-time machine learning that keeps learning.

Events are joined with what was served into labelled samples, a learner trains
on them online, a gate validates each new version and the server hot-swaps it
in. Start with `livelearn demo`.
"""


def main(argv: list[str] | None = None) -> int:
    try:
        parser = _parser()  # imports the roles' modules: a Ctrl-C may come meanwhile
    except KeyboardInterrupt:
        return 130
    args = _parse(parser, argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")
    held = _SampleWarnings()
    if args.quiet:
        logging.getLogger("livelearn.train.dead_letters").addFilter(held)
    if args.verbose:  # livelearn's details too: librdkafka's messages (log/kafka.py)
        logging.getLogger("livelearn").setLevel(logging.DEBUG)
    main_thread = threading.current_thread() is threading.main_thread()  # signals go there
    was = signal.signal(signal.SIGTERM, _stop_on_sigterm) if main_thread else None
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a reader gone away is caught below
        return code
    except LivelearnError as e:
        print(f"livelearn: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        return 128 + signal.SIGTERM if isinstance(e, Terminated) else 130
    except BrokenPipeError:  # the reader of our output went away (`livelearn models ls | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, was)
        logging.getLogger("livelearn.train.dead_letters").removeFilter(held)
        if args.verbose:
            logging.getLogger("livelearn").setLevel(logging.NOTSET)
        if held.count:
            command = read_them(args)
            print(f"livelearn: -q held back {held.count} warnings of samples the trainer "
                  f"could not learn; the dead_letters topic has each one's reason"
                  f"{f' ({command} prints them)' if command else ''}", file=sys.stderr)


class Terminated(KeyboardInterrupt):
    """A SIGTERM (``kill``, a service manager stopping the command): it stops a command as
    Ctrl-C does (a live loop says where it resumes, a server stops, the roles write what
    they hold), and the command exits with 143, as a process the signal ended."""


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that ``models`` takes its words (PIPELINE, the
    action and its version) on either side of its options: argparse gives a positional
    of nargs="*" only its first run of words, so `models PIPELINE --registry DIR ls`
    failed with "unrecognized arguments: ls"."""
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "func", None) is _models:
        args.words += [word for word in extra if not word.startswith("-")]
        extra = [word for word in extra if word.startswith("-")]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


class _SampleWarnings(logging.Filter):
    """Holds back, and counts, the trainer's warning for each sample it dead-letters
    (one per sample, with its place and reason, on logger livelearn.train.dead_letters)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.count += 1
        return False


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livelearn", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true",
                           help="log warnings and errors only")
    verbosity.add_argument("-v", "--verbose", action="store_true",
                           help="log details too, such as the Kafka client's (librdkafka's) "
                                "own messages: each failed connection to a broker")
    p.add_argument("--version", action="version", version=f"livelearn {__version__}")
    sub = p.add_subparsers(title="commands", required=True, metavar="COMMAND")
    _demo_parser(sub)
    _role_parsers(sub)
    _models_parser(sub)
    add_data_parsers(sub)
    add_dead_letters_parsers(sub)
    add_study_parsers(sub)
    add_examples_parsers(sub)
    return p


def _demo_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = sub.add_parser(
        "demo", help="the whole loop on a simulated news feed, with live progress and a report",
        description="Run the whole learning loop on a simulated, drifting news feed: a real "
        "HTTP server on 127.0.0.1 ranks posts for simulated users, their clicks and reads "
        "come back over HTTP, the joiner labels what was served, the trainer learns online, "
        "the gate approves versions and the server hot-swaps them. Prints a summary and "
        "writes an HTML report.")
    d.add_argument("--impressions", type=int, default=200_000,
                   help="impressions to simulate (default: %(default)s)")
    d.add_argument("--candidates", type=_candidates, default=10,
                   help="posts ranked per feed request, 1 to 1000 (the most items /predict "
                        "takes); every one is shown (default: %(default)s)")
    d.add_argument("--days", type=float, default=2.0,
                   help="simulated days the impressions spread over, from 2026-01-05 "
                        "(UTC) and ending before now (default: %(default)s)")
    d.add_argument("--seed", type=int, default=7, help="seed of the world (default: %(default)s)")
    d.add_argument("--faults", type=_fraction, default=0.002,
                   help="fraction of feedback events spoiled on purpose (duplicate, malformed, "
                        "orphan, late) to show the dead-letter path (default: %(default)s)")
    d.add_argument("--workdir", type=Path, default=Path("livelearn-demo"),
                   help="where the log, registry, tables and report go; cleared first if the "
                        "demo made it (default: %(default)s)")
    d.add_argument("--report", type=Path, default=None,
                   help="HTML report path (default: WORKDIR/report.html)")
    d.add_argument("--summary-json", type=Path, default=None,
                   help="also write the summary as JSON to this path")
    d.add_argument("--no-progress", action="store_true", help="do not show the live view")
    d.set_defaults(func=_demo)


# The roles' --log: as the other commands', but the in-memory log is refused by the roles
# that read what other processes append (_shared_log).
ROLE_LOG_HELP = LOG_HELP.replace(
    "memory://,", "memory:// (this process's own: join and train refuse it, as nothing "
                  "another process appends reaches it),")


def _role_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("pipeline", metavar="PIPELINE",
                        help=PIPELINE_HELP)
    common.add_argument("--log", required=True, metavar="URL", help=ROLE_LOG_HELP)
    registry = argparse.ArgumentParser(add_help=False)
    registry.add_argument("--registry", type=Path, required=True, metavar="DIR",
                          help="the model registry's directory")
    s = sub.add_parser("serve", parents=[common, registry],
                       help="run the prediction server (one role)",
                       description="Serve predictions over HTTP (a feedback join's are logged "
                       "for the joiner; a label in the events' are not), take feedback, "
                       "hot-swap approved versions; the dashboard is at /dashboard.")
    s.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help=f"folder of the table files (default: {DATA_DEFAULT})")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s)")
    s.add_argument("--port", type=port_number, default=8000,
                   help="TCP port to listen on, 0 to 65535 (0: any free one) "
                        "(default: %(default)s)")
    s.add_argument("--store", default="memory://", metavar="URL",
                   help="online store the tables and the pipeline's windowed counters are "
                        "kept in: memory:// (this process) or redis://host:port/db, shared "
                        "by several servers (?namespace=NAME keeps a pipeline's keys apart, "
                        "default livelearn); ?retention_ms= how long a key's counted "
                        "events are kept behind its newest (or now, if earlier), in ms "
                        "(default: the pipeline's longest counter window plus an hour), "
                        "?max_versions= the versions kept of a table row (default 8) "
                        "(default: %(default)s)")
    s.add_argument("--poll", type=positive_seconds, default=0.1, metavar="SECONDS",
                   help="how often to look for a newly approved version, in seconds "
                        "(default: %(default)s)")
    s.set_defaults(func=_serve)
    j = sub.add_parser("join", parents=[common],
                       help="run the joiner: predictions + feedback -> samples",
                       description="Join predictions with their feedback into samples, "
                       "writing them with a checkpoint at most every second or so "
                       "(at once under load); a restart resumes exactly, and so does a live "
                       "joiner by itself once a log that went away answers again.")
    j.add_argument("--until-idle", action="store_true",
                   help="treat the log as complete: drain it, emit every open window, say "
                        "what was read and written, stop (default: run forever)")
    j.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help=f"folder of the tables a label-in-event join looks up (default: "
                        f"{DATA_DEFAULT})")
    j.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N",
                   help="join only partition numbers p with p %% N == K, one process per "
                        "shard, for a pipeline with several partitions (default: 0/1, all); "
                        "a shard of another N than the shards the log records is refused")
    j.add_argument("--reshard", action="store_true",
                   help="record --shard's N as the log's count of shards in place of another "
                        "(stop every shard of the other count first; a shard of a count new "
                        "to the log starts at the log's start)")
    j.add_argument("--engine", choices=("embedded", "flink"), default="embedded",
                   help="embedded: in this process; flink: the Flink SQL job of "
                        "`livelearn flink-sql` on a local PyFlink, over a Kafka log "
                        "(docs/scale-out.md says how to install it) (default: %(default)s)")
    j.add_argument("--flink-address", default=None, metavar="HOST:PORT",
                   help="with --engine flink: submit the job to the Flink cluster whose "
                        "JobManager's REST API is at HOST:PORT (scripts/flink/start-cluster.sh "
                        "starts one) instead of running it on a local PyFlink")
    j.add_argument("--checkpoints", type=Path, default=None, metavar="DIR",
                   help="with --engine flink, unbounded: keep the job's checkpoints in DIR "
                        "and start from the newest one there, so a restarted joiner neither "
                        "loses nor repeats samples (on a cluster: a path its processes reach)")
    add_skip_lost(j, "the joiner (with --engine flink, unbounded: its consumer group, when "
                     "it starts)")
    j.set_defaults(func=_join)
    f = sub.add_parser("flink-sql", help="print the Flink SQL job the pipeline's join becomes",
                       description="Print the Flink SQL job built from the pipeline's join: "
                       "Kafka sources with watermarks, the interval join, one sample per "
                       "prediction, late and orphan feedback and samples too large for their "
                       "topic to the dead-letter topic.")
    f.add_argument("pipeline", metavar="PIPELINE",
                   help=PIPELINE_HELP)
    f.add_argument("--log", default="kafka://localhost:9092", metavar="URL",
                   help="the Kafka log the job reads and writes (default: %(default)s)")
    f.add_argument("--until-idle", action="store_true",
                   help="a bounded job: read the topics to their current end, then stop")
    f.add_argument("--max-message-bytes", type=int, default=None, metavar="N",
                   help="the samples and dead-letters topics' max.message.bytes, in bytes, "
                        "which the "
                        "job holds (a larger sample or dead letter is dead-lettered as "
                        "too_large); default: asked of the broker of --log, whose topics "
                        "must exist")
    f.set_defaults(func=_flink_sql)
    t = sub.add_parser("train", parents=[common, registry],
                       help="run the trainer and the gate: samples -> versions",
                       description="Learn from samples, publish versions, approve, reject or "
                       "roll back; a restart resumes from the newest published version, and so "
                       "does a live trainer by itself once a log that went away answers again.")
    t.add_argument("--until-idle", action="store_true",
                   help="stop once no sample is left, publishing what was learned since the "
                        "last version, and say what was learned and dead-lettered (default: "
                        "run forever)")
    add_skip_lost(t, "the trainer")
    t.set_defaults(func=_train)


def _models_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    m = sub.add_parser("models", help="the registry by hand: list, promote, roll back",
                       usage="livelearn models [-h] [--workdir DIR | --registry DIR] "
                             "[PIPELINE] [ls | promote VERSION | rollback]",
                       description="List a registry's model versions with their status and "
                       "the event time each began serving, in ISO 8601 UTC (GET /models of the "
                       "server gives it in ms), and below, each judged version's last verdict "
                       "with its reason: ls, the "
                       "default; make VERSION the one servers serve: promote VERSION; reject "
                       "the serving version and serve the one before: rollback (the trainer goes "
                       "on from its newest version; the gate judges what it publishes next "
                       "against the version rolled back to). The registry "
                       "is PIPELINE's (in its --workdir, default livelearn-NAME, as run and "
                       "replay keep it), or the one --registry names.")
    where = m.add_mutually_exclusive_group()
    where.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                       help="PIPELINE's work folder (default: livelearn-NAME)")
    where.add_argument("--registry", type=Path, default=None, metavar="DIR",
                       help="the model registry's directory (then PIPELINE may be left out)")
    m.add_argument("words", nargs="*", metavar="[PIPELINE] [ACTION]", help=argparse.SUPPRESS)
    m.set_defaults(func=_models)


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from livelearn.demo import DemoConfig, run_demo

    logging.getLogger().setLevel(logging.WARNING)
    # a SIGTERM (kill, a service manager) ends the demo as Ctrl-C does: its server process
    # is stopped, not left serving with no demo
    was = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        summary = run_demo(DemoConfig(
            impressions=args.impressions, candidates=args.candidates, days=args.days,
            seed=args.seed, faults=args.faults, workdir=args.workdir, report=args.report,
            summary_json=args.summary_json, progress=not args.no_progress))
    finally:
        signal.signal(signal.SIGTERM, was)
    table = Table(title="summary", show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Exit with 128 + SIGTERM, as a process killed by it, after every ``finally``."""
    raise SystemExit(128 + signum)


def _serve(args: argparse.Namespace) -> int:
    from livelearn.cli_data import bound_socket, serve_http
    from livelearn.registry import Registry
    from livelearn.serve.app import create_app
    from livelearn.serve.counters import retention_for
    from livelearn.spec import data_dir_of
    from livelearn.tables.store import open_store

    bound_socket(args.host, args.port).close()  # a port in use: now, not after loading
    pipeline, log = _open(args)  # its topics made, if the server is the first role
    app = create_app(pipeline, log, Registry(args.registry),
                     args.data or data_dir_of(args.pipeline), poll_s=args.poll,
                     store=open_store(args.store, retention_for(pipeline.counters)))
    serve_http(app, args.host, args.port)
    return 0


def _candidates(text: str) -> int:
    """--candidates: as many items as one /predict takes, at most."""
    from livelearn.serve.limits import MAX_PREDICT

    return number_of(text, int, lambda v: 1 <= v <= MAX_PREDICT,
                     f"a whole number from 1 to {MAX_PREDICT} (the most items /predict takes)")


def _fraction(text: str) -> float:
    """--faults: a number in [0, 1]."""
    return number_of(text, float, lambda v: 0 <= v <= 1, "a fraction in [0, 1]")


def _shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    if not (sep and is_digits(k) and is_digits(n) and int(k) < int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")
    return int(k), int(n)


def _shared_log(args: argparse.Namespace, role: str) -> None:
    """ConfigError for --log memory:// in a role that reads what other processes append
    (join, train): its log would be empty, the role waiting on it forever."""
    if args.log.startswith("memory:"):
        raise ConfigError(f"--log {args.log}: the in-memory log is this process's own, so "
                          f"`livelearn {role}` would find nothing there that another "
                          f"process appended; give the log the other roles use "
                          f"(sqlite:///PATH or kafka://HOST:PORT), or run every role in one "
                          f"process with `livelearn run`")


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    from livelearn.log import open_log
    from livelearn.spec import load_pipeline

    pipeline, log = load_pipeline(args.pipeline), open_log(args.log)
    for topic in pipeline.topics:
        log.create_topic(topic, pipeline.partitions)
    return pipeline, log


def _join(args: argparse.Namespace) -> int:
    from livelearn.join.runner import JoinRunner
    from livelearn.spec import data_dir_of

    _shared_log(args, "join")
    if args.engine == "flink":
        from livelearn.join.flink import run_flink_join
        from livelearn.spec import load_pipeline

        if args.shard != (0, 1) or args.reshard:
            which = "--shard" if args.shard != (0, 1) else "--reshard"
            raise ConfigError(f"{which} is for the embedded joiner: a Flink join runs every "
                              "partition itself, in parallel")

        tally = run_flink_join(load_pipeline(args.pipeline), args.log, bounded=args.until_idle,
                               flink_address=args.flink_address, checkpoints=args.checkpoints,
                               skip_lost=args.skip_lost)
        if tally is not None:
            print(_joined(tally.read, tally.counts))
        return 0
    if args.flink_address is not None or args.checkpoints is not None:

        raise ConfigError("--flink-address and --checkpoints go with --engine flink")
    pipeline, log = _open(args)

    def joiner() -> JoinRunner:
        return JoinRunner(log, pipeline, data_dir=args.data or data_dir_of(args.pipeline),
                          shard=args.shard, skip_lost=args.skip_lost, reshard=args.reshard)

    first = joiner()
    if not first.inputs:
        _warn_empty_shard(args.shard, log, pipeline.inputs)
    if args.until_idle:  # a bounded join fails with its log, where a live one waits for it
        return _join_until_idle(first)
    runner = Resuming(joiner, "the joiner", first)
    read, wrote = 0, Counter[str]()  # wrote: the outputs of joiners the log failed under
    try:
        while True:
            was = runner.role
            done = runner.turn(lambda role: role.step())
            read += done or 0
            if runner.role is not was:  # what it made and did not write is made again
                wrote += was.written
            if not done:
                time.sleep(0.05)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: what this run did, as at --until-idle's end
        print(f"stopped: {_joined(read, wrote + runner.role.counts)}", flush=True)
        raise


def _join_until_idle(runner: Any) -> int:
    """Join all there is, emit every open window, say what was read and written."""
    read = 0
    try:
        while done := runner.step(final=True):
            read += done
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: what this run did
        print(f"stopped: {_joined(read, runner.counts)}", flush=True)
        raise
    print(_joined(read, runner.counts))
    return 0


def _joined(read: int, counts: Counter[str]) -> str:
    """What `join --until-idle` says at its end, on either engine: the records read, the
    samples and the dead letters by reason."""
    from livelearn.spec import SAMPLES

    dead = {k: n for k, n in counts.items() if k != SAMPLES}
    return f"{read} records read, {counts[SAMPLES]} samples, {dead_letters_said(dead)}"


def _warn_empty_shard(shard: tuple[int, int], log: Any, topics: list[str]) -> None:
    k, n = shard
    partitions = Counter(topic for topic, _ in log.topic_partitions(topics))
    counts = ", ".join(f"{t} ({partitions[t]} partition{'' if partitions[t] == 1 else 's'})"
                       for t in topics)
    logging.getLogger("livelearn.join").warning(
        "shard %d/%d has no partitions of topics %s: it joins nothing (a shard K/N takes "
        "partition numbers p with p %% N == K)", k, n, counts)


def _flink_sql(args: argparse.Namespace) -> int:
    from livelearn.join.flink import flink_sql
    from livelearn.spec import load_pipeline

    print(flink_sql(load_pipeline(args.pipeline), args.log, bounded=args.until_idle,
                    max_message_bytes=args.max_message_bytes), end="")
    return 0


def _train(args: argparse.Namespace) -> int:
    from livelearn.deploy.gate import Gate
    from livelearn.registry import Registry
    from livelearn.train.trainer import Trainer

    _shared_log(args, "train")
    pipeline, log = _open(args)
    registry = Registry(args.registry)

    def roles() -> tuple[Trainer, Gate]:
        return (Trainer(log, registry, pipeline, skip_lost=args.skip_lost),
                Gate.of(log, registry, pipeline))

    if args.until_idle:  # a bounded run fails with its log, where a live one waits for it
        return _train_until_idle(*roles())
    training = Resuming(roles, "the trainer")
    wrote = Counter[str]()  # the dead letters of trainers the log failed under
    try:
        while True:
            was = training.role
            stepped = training.turn(_train_turn)
            if training.role is not was:  # the next one does not write them again
                wrote += was[0].dead_letters()
            if not stepped:
                time.sleep(0.05)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: what this run did (learned since its
        # newest version is learned again after a restart)
        trainer = training.role[0]
        print(f"stopped: {learned(trainer, wrote + trainer.dead_letters())}", flush=True)
        raise


def _train_turn(roles: tuple[Any, Any]) -> bool:
    """A turn of the trainer, then of the gate; whether the trainer read anything."""
    trainer, gate = roles
    stepped = trainer.step() is not None
    gate.step()
    return stepped


def _train_until_idle(trainer: Any, gate: Any) -> int:
    """Learn every sample there is, publish what was learned since the last version, judge
    it, and say what was learned and dead-lettered."""
    while True:
        stepped = trainer.step(final=True) is not None
        gate.step()
        if not stepped:
            break
    trainer.publish_now()
    gate.step()
    print(learned(trainer, trainer.dead_letters()))
    return 0


_MODEL_ACTIONS = {"ls": 0, "promote": 1, "rollback": 0}  # each action's arguments


def _model_action(args: argparse.Namespace) -> tuple[Path, str | None, str, list[str]]:
    """The registry, the pipeline's name (None if not given), the action and its
    arguments of ``livelearn models``; ConfigError naming what is wrong."""
    words = list(args.words)
    pipeline = words.pop(0) if words and words[0] not in _MODEL_ACTIONS else None
    action = words.pop(0) if words else "ls"
    if action not in _MODEL_ACTIONS:
        raise ConfigError(f"models: unknown action {action!r}; expected ls, promote VERSION "
                          f"or rollback")
    if len(words) != _MODEL_ACTIONS[action] or not all(is_digits(w) for w in words):
        wants = "a version number" if _MODEL_ACTIONS[action] else "nothing more"
        raise ConfigError(f"models: {action} takes {wants}, got "
                          f"{' '.join(words) if words else 'none'}")
    if args.registry is None and pipeline is None:
        raise ConfigError("models: give PIPELINE (its registry is in its work folder) or "
                          "--registry DIR")
    from livelearn.spec import load_pipeline

    # loaded even beside --registry: a misspelt action (`rolback`) would be taken for a
    # PIPELINE, and `ls` done instead
    try:
        name = None if pipeline is None else load_pipeline(pipeline).name
    except ConfigError as e:
        if pipeline is None or ":" in pipeline or pipeline.endswith(".py"):
            raise
        raise ConfigError(f"models: {pipeline!r} is neither an action (ls, promote VERSION, "
                          f"rollback) nor a PIPELINE ({e})") from None
    if args.registry is not None:
        return args.registry, name, action, words
    return (args.workdir or Path(f"livelearn-{name}")) / "registry", name, action, words


def _models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from livelearn.registry import Registry

    where, name, action, words = _model_action(args)
    registry = Registry(where, create=False)
    if name is not None:  # another pipeline's versions are not PIPELINE's to change
        registry.check_pipeline(name, record=False)
    if action == "promote":
        version = int(words[0])
        if registry.promote(version, "promoted by hand") == "serving":
            print(f"v{version} serves already; servers go on serving it")
        else:
            print(f"v{version} approved; servers swap it in")
        return 0
    if action == "rollback":
        rejected, restored = registry.rollback("rolled back by hand")
        print(f"v{rejected} rejected; v{restored} approved again")
        return 0
    versions = registry.versions()
    if not versions:
        print(f"registry {where} holds no version yet (a trainer publishes its first "
              f"when it starts)")
        return 0
    table = Table("version", "parent", "status", "samples", "window metric")
    table.add_column("serving since (event time)", no_wrap=True)  # other columns wrap first
    for v in versions:
        metric = (v.meta.get("window") or {}).get("metric")
        status = f"{v.status} (file pruned)" if v.pruned else v.status
        since = "-" if v.serving_since_ts is None else utc(v.serving_since_ts)
        table.add_row(str(v.id), str(v.parent or "-"), status, str(v.meta.get("samples")),
                      "-" if metric is None else f"{metric:.4f}", since)
    Console().print(table)
    verdicts = registry.verdicts()  # below the table, whole: a table would cut the reasons
    for version, verdict in sorted(verdicts.items()):
        print(f"v{version} {verdict['status']}: {verdict['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
