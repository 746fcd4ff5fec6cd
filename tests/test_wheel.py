"""livelearn as a user installs it: from a built wheel, not from the source tree.

The wheel is built from a copy of the package's sources (pyproject.toml, README.md,
src/, examples/), so nothing outside them can leak in, then unpacked and run from an
empty folder with the source tree out of the path: every file of the package is in it,
the command and ``python -m livelearn`` run from it, and it names its version; it holds
the examples README.md runs, and `livelearn examples` copies them out of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import livelearn

ROOT = Path(__file__).resolve().parents[1]


def _build(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src" / "livelearn", source / "src" / "livelearn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "examples", source / "examples",
                    ignore=shutil.ignore_patterns("__pycache__", "data"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, timeout=120, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("livelearn-*.whl")
    return wheel


def _run(site: Path, cwd: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_wheel_holds_the_package_and_runs_without_the_source(tmp_path: Path) -> None:
    wheel = _build(tmp_path)
    assert wheel.name == f"livelearn-{livelearn.__version__}-py3-none-any.whl"
    package = ROOT / "src" / "livelearn"
    files = {f"livelearn/{p.relative_to(package).as_posix()}" for p in package.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = z.read(f"livelearn-{livelearn.__version__}.dist-info/entry_points.txt")
        z.extractall(tmp_path / "site")
    assert files - names == set(), "files of the package missing from the wheel"
    assert b"livelearn = livelearn.__main__:main" in entry_points

    empty = tmp_path / "empty"
    empty.mkdir()
    site = tmp_path / "site"
    where = _run(site, empty, "-c", "import livelearn; print(livelearn.__file__)")
    assert Path(where.strip()).is_relative_to(site)
    assert _run(site, empty, "-m", "livelearn", "--version") == \
        f"livelearn {livelearn.__version__}\n"
    sql = _run(site, empty, "-m", "livelearn", "flink-sql", "livelearn.sim.pipeline:PIPELINE",
               "--max-message-bytes", "1048588")
    assert "EXECUTE STATEMENT SET" in sql


def _example_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.py")
            if "data" not in p.parts and "__pycache__" not in p.parts}


def test_the_wheel_holds_the_examples_and_copies_them_out(tmp_path: Path) -> None:
    """README.md's quick start runs examples/fraud and examples/clicks: a user who installed
    the wheel had no copy of them (they were files of the source only). `livelearn examples`
    writes them from the installed package into a folder, and will not write over one."""
    wheel = _build(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path / "site")
    site, empty = tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    said = _run(site, empty, "-m", "livelearn", "examples")
    assert _example_files(empty / "examples") == _example_files(ROOT / "examples") != {}
    assert "examples/fraud" in said and "python examples/fraud/generate_data.py" in said
    again = subprocess.run([sys.executable, "-m", "livelearn", "examples"], cwd=empty,
                           env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 2 and again.stdout == ""
    assert "examples/fraud exists already" in again.stderr
