"""Canaries (Policies.canary_share): a candidate that passes serves a share of the users
first, over real HTTP, and the gate approves or rejects it by what it served."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from conftest import ServerThread
from livelearn.deploy.gate import Gate
from livelearn.errors import ConfigError
from livelearn.join.runner import JoinRunner
from livelearn.log.sqlite import SQLiteLog
from livelearn.registry import Registry
from livelearn.serve.app import create_app
from livelearn.serve.holder import in_canary
from livelearn.sim.history import write_tables
from livelearn.sim.pipeline import PIPELINE
from livelearn.sim.world import NewsFeed, Request
from livelearn.spec import SAMPLES, Policies
from livelearn.train.trainer import Trainer

CANARY = replace(PIPELINE, policies=Policies(
    publish_every_samples=10**9, publish_every_ms=10**15, gate_tolerance=0.05,
    canary_share=0.5, canary_samples=300))


@pytest.fixture
def loop(tmp_path: Path, log: SQLiteLog) -> Iterator[dict[str, Any]]:
    world = NewsFeed(seed=4, impressions=20_000, candidates=5, days=2, users=300,
                     new_users=0)
    write_tables(world, tmp_path / "tables")
    for topic in CANARY.topics:
        log.create_topic(topic)
    registry = Registry(tmp_path / "registry")
    trainer, gate = Trainer(log, registry, CANARY), Gate.of(log, registry, CANARY)
    assert [(d.approved, d.canary) for d in gate.step()] == [(True, False)]  # v1: the first
    app = create_app(CANARY, log, registry, tmp_path / "tables", poll_s=0.02)
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        yield {"http": http, "world": world, "requests": iter(world.requests()),
               "registry": registry, "trainer": trainer, "gate": gate, "joiner":
               JoinRunner(log, CANARY)}


def _serve(loop: dict[str, Any], n: int) -> dict[str, set[int]]:
    """``n`` feed requests with their feedback; the versions each user was served by."""
    http, world = loop["http"], loop["world"]
    served: dict[str, set[int]] = {}
    for _ in range(n):
        request: Request = next(loop["requests"])
        reply = http.post("/predict", json={"user_id": request.user_id,
                                            "items": request.candidates, "ts": request.ts})
        assert reply.status_code == 200, reply.text
        predictions = reply.json()["predictions"]
        served.setdefault(request.user_id, set()).update(p["model_version"] for p in predictions)
        shown = [(p["request_id"], p["item"]) for p in predictions]
        assert http.post("/feedback", json=world.feedback(request, shown)).status_code == 200
    loop["joiner"].step(10**6, final=True)  # every window: its feedback is in the log
    return served


def _wait_for(http: httpx.Client, **expected: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = http.get("/healthz").json()
        if all(health.get(k) == v for k, v in expected.items()):
            return
        time.sleep(0.02)
    raise AssertionError(f"/healthz never had {expected}: {health}")


def test_a_canary_serves_its_share_of_users_then_is_approved_by_what_it_served(
        loop: dict[str, Any]) -> None:
    registry, gate, http = loop["registry"], loop["gate"], loop["http"]
    assert _serve(loop, 150)  # v1 serves everyone; its samples train v2
    loop["trainer"].step(10**6)
    v2 = loop["trainer"].publish_now()
    [decision] = gate.step()
    assert (decision.version, decision.approved, decision.canary) == (v2.id, True, True)
    assert registry.get(v2.id).status == "canary" and "a canary: it scores 50%" in \
        decision.reason
    _wait_for(http, model_version=1, canary_version=v2.id)
    serving = http.get("/dashboard/data").json()["data"]["serving"]
    assert (serving["version"], serving["canary"], serving["canary_share"]) == (1, v2.id, 0.5)
    assert f"canary v{v2.id} scores 50% of the users" in http.get("/dashboard").text

    served = _serve(loop, 200)
    for user, versions in served.items():  # a user stays with one version
        assert versions == ({v2.id} if in_canary(user, 0.5) else {1})
    assert 0.3 < sum(in_canary(u, 0.5) for u in served) / len(served) < 0.7
    [verdict] = gate.step()
    assert verdict.approved and not verdict.canary
    assert verdict.reason.startswith(f"canary: live auc {verdict.candidate_metric:.4f} on the ")
    assert f"vs v1's {verdict.incumbent_metric:.4f} on the" in verdict.reason
    _wait_for(http, model_version=v2.id)
    assert "canary_version" not in http.get("/healthz").json()
    assert set().union(*_serve(loop, 20).values()) == {v2.id}
    assert registry.get(v2.id).status == "serving"


def test_a_canary_worse_live_is_rejected_and_its_users_go_back(
        loop: dict[str, Any], log: SQLiteLog) -> None:
    registry, gate, http = loop["registry"], loop["gate"], loop["http"]
    _serve(loop, 150)
    samples = [orjson.loads(r.value) for r in log.read(SAMPLES, 0, 0, 10**6)]
    worse = CANARY.learner()  # learns the clicks backwards: ranks the worst posts first
    worse.learn(CANARY.hash_rows([s["features"] for s in samples], worse.bits),
                np.array([1.0 - s["labels"]["clicked"] for s in samples]))
    bad = registry.publish(worse, {"metric": "auc", "pipeline": CANARY.name}, parent=1)
    registry.set_status(bad.id, "canary", "test: passed offline")
    _wait_for(http, canary_version=bad.id)
    later = registry.publish(CANARY.learner(), {"metric": "auc"}, parent=1)
    assert gate.step() == []  # a canary at a time: the newer candidate waits

    _serve(loop, 200)
    decisions = gate.step()
    assert [(d.version, d.approved) for d in decisions][0] == (bad.id, False)
    assert "worse by more than tolerance 0.05" in decisions[0].reason
    assert registry.get(bad.id).status == "rejected"
    assert decisions[1].version == later.id  # judged next, now that no canary runs
    _wait_for(http, model_version=1)
    assert registry.canary() is None or registry.canary().id == later.id


def test_only_the_newest_waiting_candidate_is_judged_the_older_are_retired(
        loop: dict[str, Any]) -> None:
    registry, gate = loop["registry"], loop["gate"]
    _serve(loop, 100)
    loop["trainer"].step(10**6)
    first = loop["trainer"].publish_now()
    newest = loop["registry"].publish(CANARY.learner(), {"metric": "auc"}, parent=first.id)
    decisions = gate.step()
    assert [d.version for d in decisions] == [newest.id]
    assert registry.get(first.id).status == "retired"
    assert "superseded by" in registry.decisions()[-2]["reason"]


def test_canary_policies_are_checked_when_the_pipeline_is_built() -> None:
    with pytest.raises(ConfigError, match=r"canary_share must be a number in \[0, 1\) \(the "
                       r"share of the users: 0.05 for 5%\), got 1"):
        replace(PIPELINE, policies=Policies(canary_share=1))
    with pytest.raises(ConfigError, match="canary_samples must be an integer >= 1"):
        replace(PIPELINE, policies=Policies(canary_share=0.1, canary_samples=0))
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location("_fraud", Path(__file__).parents[1] / "examples" / "fraud" /
                                   "pipeline.py")
    assert spec is not None and spec.loader is not None
    fraud = module_from_spec(spec)
    spec.loader.exec_module(fraud)
    with pytest.raises(ConfigError, match="canary_share is for a feedback join, whose samples "
                       "carry the scores the servers logged: a label-in-event server logs no "
                       "scores, .*; leave canary_share at 0"):
        replace(fraud.PIPELINE, policies=Policies(canary_share=0.1))


def test_users_split_by_a_stable_hash_in_the_share() -> None:
    users = [f"u{i}" for i in range(20_000)]
    assert abs(sum(in_canary(u, 0.1) for u in users) / len(users) - 0.1) < 0.01
    assert not any(in_canary(u, 0.0) for u in users)
    assert {u for u in users if in_canary(u, 0.05)} <= {u for u in users if in_canary(u, 0.1)}


def test_a_canary_whose_model_file_is_damaged_is_rejected_at_once(loop: dict[str, Any]) -> None:
    registry, gate = loop["registry"], loop["gate"]
    broken = registry.publish(CANARY.learner(), {"metric": "auc"}, parent=1)
    registry.set_status(broken.id, "canary", "test: passed offline")
    registry.file(broken.id).write_bytes(b"damaged")
    [decision] = gate.step()
    assert (decision.version, decision.approved) == (broken.id, False)
    assert decision.reason.startswith("corrupt: model file") and \
        registry.get(broken.id).status == "rejected"


def test_a_canary_share_that_leaves_the_incumbent_too_few_samples_is_refused() -> None:
    """At 99% the incumbent serves about 101 samples while the canary serves the 10,000 the
    gate keeps of it: never the 200 the gate needs, so the canary stayed a canary."""
    with pytest.raises(ConfigError, match=r"policies: canary_share 0.99 leaves the incumbent "
                       r"too few users: .* about 101, .* at most 0.98"):
        replace(PIPELINE, policies=Policies(canary_share=0.99))
    assert replace(PIPELINE, policies=Policies(canary_share=0.98)).policies.canary_share == 0.98


def _served_by(log: SQLiteLog, versions: list[int]) -> None:
    """A sample served by each of ``versions`` in turn, one second of event time apart."""
    rng = np.random.default_rng(len(versions))
    start = log.end_offset(SAMPLES, 0)
    log.append(SAMPLES, [(f"r{i}", orjson.dumps({
        "id": f"r{i}", "ts": 1_767_571_200_000 + i * 1000, "model_version": version,
        "score": float(rng.random()), "features": {"topic": f"t{i % 5}"},
        "labels": {"clicked": float(rng.random() < 0.3)}}))
        for i, version in enumerate(versions, start)])


def _a_canary(tmp_path: Path, log: SQLiteLog, share: float) -> tuple[Registry, Gate]:
    """v1 serves, v2 is its canary; a gate that keeps 1,000 samples a version and judges
    a canary after 300 of them."""
    log.create_topic(SAMPLES)
    registry = Registry(tmp_path / "registry")
    for status in ("approved", "canary"):
        v = registry.publish(CANARY.learner(), {"metric": "auc"}, parent=None)
        registry.set_status(v.id, status, "test")
    registry.mark_serving(1, 1_767_571_200_000)
    return registry, Gate(log, registry, "clicked", 0.05, live_window=1000,
                          canary_share=share, canary_samples=300)


def test_a_canary_whose_incumbent_serves_too_few_samples_beside_it_is_rejected_saying_so(
        tmp_path: Path, log: SQLiteLog) -> None:
    """Few users, nearly all in the canary's share: over the most samples the gate keeps
    of the canary, the incumbent served 10, never the 200 it needs. It waited forever."""
    registry, gate = _a_canary(tmp_path, log, 0.5)
    _served_by(log, ([2] * 99 + [1]) * 9 + [2] * 100)
    assert gate.step() == []  # 991 of the canary's: the times compared may still grow
    _served_by(log, [1] + [2] * 9)
    [decision] = gate.step()
    assert (decision.version, decision.approved) == (2, False)
    assert decision.reason == (
        "canary: cannot be judged: over the event times of the 1000 samples it served (the "
        "most the gate keeps), v1 served 10 of the 200 the gate needs; too few users are "
        "outside canary_share 0.5 (few users, or a share near 1)")
    assert registry.get(2).status == "rejected"


def test_a_canary_that_serves_too_few_samples_is_rejected_saying_so(
        tmp_path: Path, log: SQLiteLog) -> None:
    """Few users, none in the canary's share: it never served, and waited forever."""
    registry, gate = _a_canary(tmp_path, log, 0.5)
    assert gate.step() == []
    _served_by(log, [1] * 899)
    assert gate.step() == []  # at 50%, it may still gather them
    _served_by(log, [1])
    [decision] = gate.step()
    assert (decision.version, decision.approved) == (2, False)
    assert decision.reason == (
        "canary: cannot be judged: it served 0 of the 300 samples it needs while v1 served "
        "900, three times what v1 serves meanwhile at canary_share 0.5; too few users are "
        "in the share (few users, or a share near 0)")
    assert registry.get(2).status == "rejected"

