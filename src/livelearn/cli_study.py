"""`livelearn study freshness`: the metric as a function of how often the served model
is updated (study/freshness.py), on the simulated news feed or a user's history."""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path
from typing import Any

from livelearn.cli_data import DATA_DEFAULT, PIPELINE_HELP
from livelearn.errors import ConfigError

SIM_HELP = "for the simulated feed (no PIPELINE)"


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from livelearn.study.freshness import DEFAULT_INTERVALS

    study = sub.add_parser("study", help="what keeping on learning is worth",
                           description="Studies of the loop, on history.")
    studies = study.add_subparsers(title="studies", required=True, metavar="STUDY")
    f = studies.add_parser(
        "freshness", help="the metric as a function of how often the served model is updated",
        description="One pass over the labelled samples (the simulated news feed's, or those "
        "PIPELINE's joiner makes from --events): one learner learns every sample; for each "
        "update interval the samples are scored by the version a server redeployed every "
        "interval (event time) would have served. Prints the metric of each interval.")
    f.add_argument("pipeline", nargs="?", default=None, metavar="PIPELINE",
                   help=f"{PIPELINE_HELP} (default: the simulated news feed)")
    f.add_argument("--events", nargs="+", action="extend", default=None,
                   metavar="STREAM=FILE",
                   help="with PIPELINE: the files to replay, as `livelearn replay` takes them")
    f.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help=f"with PIPELINE: folder of the table files (default: {DATA_DEFAULT})")
    f.add_argument("--impressions", type=int, default=None,
                   help=f"impressions to simulate, {SIM_HELP} (default: 200000)")
    f.add_argument("--days", type=float, default=None,
                   help=f"simulated days, from 2026-01-05 (UTC) and ending before now, {SIM_HELP} "
                        f"(default: 2)")
    f.add_argument("--seed", type=int, default=None,
                   help=f"seed of the world and of the order posts are shown in, {SIM_HELP} "
                        f"(default: 7)")
    f.add_argument("--intervals", default=DEFAULT_INTERVALS, metavar="LIST",
                   help="update intervals of event time, comma-separated: a whole number and "
                        "a unit (ms, s, m, h, d), 0 for every sample (prequential), never for "
                        "frozen after the warm-up (default: %(default)s)")
    f.add_argument("--delay", default="0", metavar="DURATION",
                   help="event time from a version's cut to its serving, such as 5m "
                        "(default: 0)")
    f.add_argument("--warmup", default="0.1", metavar="SHARE",
                   help="share of the samples learned before any is scored, in [0, 1) "
                        "(default: %(default)s)")
    f.add_argument("--json", type=Path, default=None, metavar="PATH", dest="json_path",
                   help="write the results as JSON here")
    f.add_argument("--report", type=Path, default=None, metavar="PATH",
                   help="write an HTML page of the metric against the interval here")
    f.set_defaults(func=_freshness)


def _freshness(args: argparse.Namespace) -> int:
    from livelearn.files import check_writable
    from livelearn.loop import tune_gc
    from livelearn.study.freshness import parse_duration, parse_intervals, study_history, table
    from livelearn.study.freshness import write_html as write_study_html
    from livelearn.ui.report import write_json

    intervals = parse_intervals(args.intervals)
    delay_ms = parse_duration(args.delay, "--delay")
    warmup = _share(args.warmup)
    for path, what in ((args.json_path, "--json"), (args.report, "--report")):
        if path is not None:
            check_writable(path, what)
    tune_gc()
    with tempfile.TemporaryDirectory(prefix="livelearn-study-") as scratch:
        pipeline, sources, data, inputs = _inputs(args, Path(scratch))
        said = None if "simulated" in inputs else functools.partial(_say_replayed, pipeline)
        study, summary = study_history(pipeline, sources, data, Path(scratch), intervals,
                                       delay_ms, warmup, said)
    summary = {**summary, **inputs}
    if "simulated" in inputs:  # its files were scratch files, gone now: the streams alone
        summary["inputs"] = {k.partition("=")[0]: v for k, v in summary["inputs"].items()}
    print(table(summary))
    print(f"{summary['samples']:,} samples, the last {summary['scored']:,} scored (warm-up "
          f"{warmup}, deploy delay {args.delay})", flush=True)
    if args.json_path is not None:
        write_json(args.json_path, summary, "--json")
    if args.report is not None:
        print(f"report {write_study_html(args.report, study, summary)}")
    return 0


def _say_replayed(pipeline: Any, report: dict[str, Any]) -> None:
    """What a user's files gave, as `livelearn replay` says it: each input's events and
    first errors, the dead letters, what to do about late events; BadInput for an input
    whose every record was dead-lettered."""
    from livelearn.cli_data import dead_letters_said, say_history_checks, say_inputs

    say_inputs(report)
    print(f"{report['events']} events, {report['samples']} samples, "
          f"{dead_letters_said(report['dead_letters'])}", flush=True)
    say_history_checks(report, pipeline.feedback.allowed_lateness_ms)


def _inputs(args: argparse.Namespace, scratch: Path
            ) -> tuple[Any, list[tuple[str, str]], Path, dict[str, Any]]:
    """(pipeline, (stream, file) pairs, data folder, what to record of the inputs)."""
    sim = {"impressions": args.impressions, "days": args.days, "seed": args.seed}
    if args.pipeline is None:
        if args.events or args.data:
            raise ConfigError("--events and --data go with a PIPELINE; without one the study "
                              "runs on the simulated news feed")
        from livelearn.sim.history import write_history
        from livelearn.sim.pipeline import PIPELINE
        from livelearn.sim.world import NewsFeed, check_in_past

        given = {"impressions": 200_000, "days": 2.0, "seed": 7,
                 **{k: v for k, v in sim.items() if v is not None}}
        check_in_past(given["days"], int(time.time() * 1000))
        world = NewsFeed(seed=given["seed"], impressions=given["impressions"],
                         days=given["days"])
        return PIPELINE, write_history(world, scratch / "feed", given["seed"]), \
            scratch / "feed", {"simulated": given}
    named = [f"--{k}" for k, v in sim.items() if v is not None]
    if named:
        raise ConfigError(f"{', '.join(named)}: {SIM_HELP}; with PIPELINE give --events")
    if not args.events:
        raise ConfigError(f"pipeline {args.pipeline!r}: give its history as --events "
                          f"STREAM=FILE ...")
    from livelearn.cli_data import source_pair
    from livelearn.spec import data_dir_of, load_pipeline

    sources = [source_pair(text) for text in args.events]
    return load_pipeline(args.pipeline), sources, args.data or data_dir_of(args.pipeline), {}


def _share(text: str) -> float:
    """--warmup as a float in [0, 1); ConfigError otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise ConfigError(f"--warmup {text!r}: expected a share of the samples in [0, 1), "
                          f"such as 0.1")
    return value
