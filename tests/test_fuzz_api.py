"""The HTTP API fuzzed from its own OpenAPI spec: no 5xx, and the server keeps serving.

schemathesis reads /openapi.json from a real server on 127.0.0.1 and generates
requests for every operation, both ones that fit the spec (positive) and ones
that break it (negative: wrong types, missing fields, odd bodies). Each goes
over real HTTP; any 5xx fails the test. The number of examples is bounded, so
the whole module runs in well under a minute.

schemathesis' pytest plugin (``from_fixture``) does not run under pytest 9, so
each operation's strategy is driven by hypothesis' ``@given`` inside the test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error

from conftest import ServerThread
from livelearn.deploy.gate import Gate
from livelearn.log.sqlite import SQLiteLog
from livelearn.registry import Registry
from livelearn.serve.app import create_app
from livelearn.sim.history import write_tables
from livelearn.sim.pipeline import PIPELINE
from livelearn.sim.world import NewsFeed
from livelearn.train.trainer import Trainer

EXAMPLES = 50  # per operation and generation mode
OPERATIONS = ["POST /predict", "POST /feedback", "GET /models", "GET /healthz", "GET /readyz",
              "GET /metrics", "GET /dashboard/data"]
#: Negative cases only exist for operations that take input: the GETs take none.
RUNS = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, GenerationMode.NEGATIVE) for op in OPERATIONS if op.startswith("POST")]


@pytest.fixture
def world() -> NewsFeed:
    return NewsFeed(seed=3, impressions=200, candidates=5, days=0.5, users=50, new_users=5)


@pytest.fixture
def server(tmp_path: Path, log: SQLiteLog, world: NewsFeed) -> Iterator[ServerThread]:
    write_tables(world, tmp_path / "tables")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    registry = Registry(tmp_path / "registry")
    Trainer(log, registry, PIPELINE)
    Gate(log, registry, PIPELINE.target, PIPELINE.policies.gate_tolerance).step()
    app = create_app(PIPELINE, log, registry, tmp_path / "tables")
    with ServerThread(app) as running:
        yield running


def test_the_spec_lists_every_operation(server: ServerThread) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    found = {op.ok().label for op in schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize(("label", "mode"), RUNS, ids=[f"{op} {mode}" for op, mode in RUNS])
def test_no_request_from_the_spec_gets_a_5xx(server: ServerThread, world: NewsFeed, label: str,
                                             mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    method, path = label.split(" ")
    operation = schema[path][method]
    statuses: list[int] = []

    posts = [post["post_id"] for post in world.posts]

    @given(case=operation.as_strategy(generation_mode=mode), known=st.booleans())
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def call(case: Case, known: bool) -> None:
        if known and label == "POST /predict" and mode == GenerationMode.POSITIVE:
            # Random ids are never in the table: let half the cases score real posts.
            case.body["items"] = [posts[i % len(posts)] for i in range(len(case.body["items"]))]
        response = case.call(base_url=server.url, timeout=10)
        statuses.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])

    call()
    print(label, mode, "statuses:", dict(Counter(statuses)))
    assert statuses and max(statuses) < 500
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok", "model_version": 1}
