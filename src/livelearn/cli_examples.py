"""`livelearn examples`: a copy of the example pipelines README.md runs (fraud, clicks),
written from the installed package (livelearn.examples in a wheel) or from the source's
examples/ folder, so that a user with only the wheel has them too."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from livelearn.errors import ConfigError

EXAMPLES = ("fraud", "clicks")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    e = sub.add_parser(
        "examples", help="copy the example pipelines into a folder",
        description="Write the example pipelines of README.md and docs/own-data.md (fraud: a "
        "label in the event; clicks: feedback joined to what was shown), each a pipeline.py "
        "and a generate_data.py, into DIR/fraud and DIR/clicks; a folder of one that is there "
        "already is left alone and the command refused. README.md's commands run from the "
        "folder that holds DIR.")
    e.add_argument("folder", nargs="?", type=Path, default=Path("examples"), metavar="DIR",
                   help="where the examples go (default: %(default)s)")
    e.set_defaults(func=_examples)


def bundled() -> Path:
    """The folder holding the examples: livelearn/examples when installed from a wheel,
    the source's examples/ beside src/ when run from the source (or an editable install)."""
    package = Path(__file__).resolve().parent
    for folder in (package / "examples", package.parents[1] / "examples"):
        if all((folder / name / "pipeline.py").is_file() for name in EXAMPLES):
            return folder
    raise ConfigError(f"examples: this installation of livelearn ({package}) holds no "
                      f"examples; reinstall it from a wheel built with its examples/ folder")


def _examples(args: argparse.Namespace) -> int:
    source, folder = bundled(), args.folder
    there = [folder / name for name in EXAMPLES if (folder / name).exists()]
    if there:
        raise ConfigError(f"examples: {there[0]} exists already; give another folder "
                          f"(livelearn examples DIR) or move it away")
    for name in EXAMPLES:
        (folder / name).mkdir(parents=True)
        for file in sorted((source / name).glob("*.py")):
            shutil.copyfile(file, folder / name / file.name)
    fraud = folder / "fraud"
    print(f"wrote {fraud} and {folder / 'clicks'} (pipeline.py, generate_data.py); then, "
          f"as README.md shows:\n"
          f"  python {fraud / 'generate_data.py'}\n"
          f"  livelearn replay {fraud / 'pipeline.py'} "
          f"--events transactions={fraud / 'data' / 'transactions.jsonl'}")
    return 0
