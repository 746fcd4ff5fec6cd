"""The examples run exactly as the documentation shows them (README.md once it has the
examples, docs/own-data.md until then), each in a fresh copy of examples/."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from livelearn.demo import free_port

ROOT = Path(__file__).resolve().parent.parent


def _commands(name: str) -> list[list[str]]:
    """The shell commands of the block marked ``<!-- example: NAME -->``."""
    for doc in (ROOT / "README.md", ROOT / "docs" / "own-data.md"):
        text = doc.read_text() if doc.is_file() else ""
        found = re.search(rf"<!-- example: {name} -->\n```sh\n(.*?)```", text, re.S)
        if found:
            script = found.group(1).replace("\\\n", " ")
            return [shlex.split(line) for line in script.splitlines() if line.strip()]
    raise AssertionError(f"no example block {name!r} in README.md or docs/own-data.md")


def _run(commands: list[list[str]], cwd: Path, port: int | None = None) -> list[str]:
    """Run each command; one that ends with ``&`` in the background, until the last is
    done. With ``port``, every ``8000`` in an argument is that port."""
    outputs, background = [], []
    program = {"python": [sys.executable], "livelearn": [sys.executable, "-m", "livelearn"],
               "curl": ["curl", "--fail-with-body"]}
    try:
        for argv in commands:
            if port is not None:
                argv = [arg.replace("8000", str(port)) for arg in argv]
            if argv[-1] == "&":
                background.append(subprocess.Popen([*program[argv[0]], *argv[1:-1]], cwd=cwd,
                                                   stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL))
                continue
            done = subprocess.run([*program[argv[0]], *argv[1:]], cwd=cwd, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
            outputs.append(done.stdout)
    finally:
        for process in background:
            process.terminate()
            process.wait(10)
    return outputs


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("data", "__pycache__"))
    return tmp_path


def _report(path: Path) -> dict:
    report = orjson.loads(path.read_bytes())
    assert report["samples"] > 10_000 and report["events"] >= report["samples"]
    assert report["events_per_s"] > 0 and report["buckets"]
    assert sum(b["samples"] for b in report["buckets"]) == report["samples"]
    return report


def test_fraud_example(workdir: Path) -> None:
    _run(_commands("fraud"), workdir)
    report = _report(workdir / "fraud-report.json")
    assert report["metric"] == "auc" and report["metric_value"] > 0.7
    assert report["dead_letters"] == {}
    assert (workdir / "livelearn-fraud" / "replay.html").read_text().count("<svg") >= 1
    for block in ("fraud-serve", "fraud-serve-docs"):  # README's, docs/own-data.md's
        answer = orjson.loads(_run(_commands(block), workdir, free_port())[0])
        assert answer["model_version"] >= 1 and len(answer["scores"]) == 1
        assert 0 < answer["scores"][0]["score"] < 1
    out = _run(_commands("fraud-live"), workdir)
    assert "20000 events appended, 0 dead-lettered" in out[0]
    assert "20000 samples learned" in out[1]


def test_clicks_example(workdir: Path) -> None:
    _run(_commands("clicks"), workdir)
    report = _report(workdir / "clicks-report.json")
    assert report["metric"] == "auc" and report["metric_value"] > 0.55
    assert report["samples"] == 20_000 and report["dead_letters"] == {}


@pytest.mark.parametrize("doc", ["README.md", *sorted(f"docs/{p.name}"
                                                     for p in (ROOT / "docs").glob("*.md"))])
def test_the_docs_link_only_to_files_in_the_repository(doc: str) -> None:
    path = ROOT / doc
    for target in re.findall(r"\]\(([^)\s#]+)[^)]*\)", path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        linked = (path.parent / target).resolve()
        assert linked.is_relative_to(ROOT) and linked.exists(), f"{doc} links {target}"


def test_livelearn_examples_writes_the_sources_examples(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """README.md: `livelearn examples` writes the examples it runs (from the source here; from
    the package installed from a wheel in tests/test_wheel.py), and writes over none."""
    from livelearn.cli import main

    def files(folder: Path) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.py")
                if "data" not in p.parts and "__pycache__" not in p.parts}

    assert main(["examples", str(tmp_path / "ex")]) == 0
    assert files(tmp_path / "ex") == files(ROOT / "examples") != {}
    (tmp_path / "ex" / "fraud" / "pipeline.py").write_text("# mine\n")
    capsys.readouterr()
    assert main(["examples", str(tmp_path / "ex")]) == 2
    assert f"{tmp_path / 'ex' / 'fraud'} exists already" in capsys.readouterr().err
    assert (tmp_path / "ex" / "fraud" / "pipeline.py").read_text() == "# mine\n"
