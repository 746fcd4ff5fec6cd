"""docs/scale-out.md's commands, run as written against a real Kafka broker and Redis."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from string import Template
from typing import Any

import httpx
import orjson
import pytest

from livelearn.demo import free_port
from livelearn.log import open_log
from livelearn.registry import Registry
from livelearn.sim.history import write_tables
from livelearn.sim.world import NewsFeed
from livelearn.spec import PREDICTIONS, SAMPLES

DOC = Path(__file__).resolve().parents[1] / "docs" / "scale-out.md"


def doc_block(name: str) -> list[str]:
    """The command lines of the doc's block marked ``<!-- scale-out: NAME -->``."""
    block = DOC.read_text().split(f"<!-- scale-out: {name} -->", 1)[1]
    body = re.search(r"```sh\n(.*?)```", block, re.S)
    assert body is not None
    return [line for line in body.group(1).splitlines() if line.strip()]


def doc_commands(engine: str) -> list[str]:
    """The roles as the doc gives them, with the Flink join in place of the embedded one."""
    roles = doc_block("roles")
    if engine == "flink":
        roles = [c for c in roles if not c.startswith("livelearn join")] + doc_block("join-flink")
    return roles


def start(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Run one documented command, its $VARIABLES taken from ``env``, output to ``log``."""
    args = [Template(a).substitute(env) for a in command.split()]
    assert args[0] == "livelearn"
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "livelearn", "-q", *args[1:]],
                                stdout=out, stderr=subprocess.STDOUT)


def wait_for(check: Any, what: str, seconds: float = 240) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("engine", ["embedded", "flink"])
def test_the_documented_roles_run_on_kafka_and_redis(tmp_path: Path, kafka_bootstrap: str,
                                                     redis_address: str, engine: str) -> None:
    world = NewsFeed(seed=5, impressions=6000, candidates=5, days=0.5, users=300, new_users=30)
    write_tables(world, tmp_path / "data")
    ports = free_port(), free_port()
    prefix = f"s{uuid.uuid4().hex[:10]}."
    env = {"KAFKA": f"{kafka_bootstrap}?prefix={prefix}", "REDIS": redis_address,
           "WORK": str(tmp_path), "DATA": str(tmp_path / "data"),
           "PORT1": str(ports[0]), "PORT2": str(ports[1])}
    processes = [start(c, env, tmp_path / f"role{i}.log")
                 for i, c in enumerate(doc_commands(engine))]
    try:
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for url in urls:
            wait_for(lambda u=url: httpx.get(f"{u}/healthz").json()["model_version"],
                     f"{url} to serve a version")
        served: dict[str, list[Any]] = {}
        with httpx.Client(timeout=30) as http:
            for i, request in enumerate(world.requests()):
                url = urls[i % 2]
                reply = http.post(f"{url}/predict", json={
                    "user_id": request.user_id, "items": request.candidates, "ts": request.ts})
                assert reply.status_code == 200, reply.text
                body = reply.json()
                served.setdefault(url, []).append(body["model_version"])
                shown = [(p["request_id"], p["item"]) for p in body["predictions"]]
                events = world.feedback(request, shown)
                if events:
                    assert http.post(f"{urls[(i + 1) % 2]}/feedback",
                                     json=events).json()["accepted"] == len(events)
        log = open_log(f"kafka://{env['KAFKA']}")
        registry = Registry(tmp_path / "registry")
        wait_for(lambda: len(registry.versions()) >= 3, "versions trained on the samples")
        def trained_incumbent() -> Any:
            incumbent = registry.incumbent()
            return incumbent if incumbent is not None and incumbent.id > 1 else None

        newest = wait_for(trained_incumbent, "an approved version trained on samples")
        for url in urls:
            wait_for(lambda u=url: httpx.get(f"{u}/healthz").json()["model_version"]
                     == registry.incumbent().id, f"{url} to swap in the newest version")
        samples = [orjson.loads(r.value) for r in log.read(SAMPLES, 0, 0, 100_000)]
        predictions = {orjson.loads(r.value)["request_id"]: orjson.loads(r.value)
                       for r in log.read(PREDICTIONS, 0, 0, 100_000)}
        assert samples and newest is not None
        for sample in samples:  # what either server served is what was learned
            assert sample["features"] == predictions[sample["id"]]["features"]
    finally:
        for p in processes:
            p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def test_bench_scale_gives_the_same_model_on_every_log_joiner_and_partition_count(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    out = tmp_path / "scale.json"
    done = subprocess.run([sys.executable, str(DOC.parents[1] / "bench" / "scale.py"),
                           "--events", "3000", "--partitions", "1,2",
                           "--kafka", kafka_bootstrap, "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    records = orjson.loads(out.read_bytes())
    assert {(r["log"], r["joiner"], r["partitions"]) for r in records} == {
        (log, joiner, p) for log, joiner in (("sqlite", "embedded"), ("kafka", "embedded"),
                                             ("kafka", "flink")) for p in (1, 2)}
    assert all(r["events_per_s"] > 0 and r["samples_learned"] == 3000 for r in records)
    assert len({r["model_sha256"] for r in records}) == 1
