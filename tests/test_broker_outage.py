"""Live roles over a Kafka broker that goes away for longer than the log's ``?timeout=``
and comes back: `join`, `train` and `run` wait for it and go on from their checkpoints
by themselves, losing and repeating no sample; `run` serves all along. Before, each
exited with code 2 at the first request that outlived the timeout (a broker killed and
restarted takes 15 s or more to answer again), and `run` took its server down with it.
On a broker of the test's own, started and stopped by scripts/kafka (start.sh, stop.sh)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson

from livelearn.cli_data import dead_letters_said
from livelearn.demo import free_port
from livelearn.log.kafka import KafkaLog
from livelearn.registry import Registry
from test_ingest import PIPELINE_FILE
from test_kafka_down import _broker
from test_run import _process, _ratings, _up, _wait


def _ingest(url: str, path: Path, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "livelearn", "-q", "ingest", "p.py", "ratings",
                    str(path), "--log", url], cwd=cwd, check=True, capture_output=True)


def _sample_ids(bootstrap: str, prefix: str) -> list[str]:
    log = KafkaLog(bootstrap, prefix, timeout_s=10)
    try:
        end = log.end_offset("samples", 0)
        return [orjson.loads(r.value)["id"] for r in log.read("samples", 0, 0, end)] if end \
            else []
    finally:
        log.close()


def _judged(registry: Path) -> bool:
    """Whether the trainer's gate judged its first version (the trainer runs live)."""
    return (registry / "index.db").is_file() and \
        any(v.status != "candidate" for v in Registry(registry).versions())


def _away(data: Path, seconds: float) -> None:
    """Stop the broker kept in ``data`` for ``seconds``, then start it again."""
    _broker("stop.sh", data)
    time.sleep(seconds)
    _broker("start.sh", data)


def _stopped(*processes: subprocess.Popen) -> list[str]:
    """What each of ``processes``, still running, printed once stopped with Ctrl-C."""
    for process in processes:
        assert process.poll() is None, process.communicate()[0].decode()
    for process in processes:
        process.send_signal(2)  # Ctrl-C: each says what it did
        assert process.wait(30) == 130
    return [process.communicate()[0].decode() for process in processes]


def test_join_and_train_wait_for_their_broker_and_go_on(tmp_path: Path) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    first, then = _ratings(tmp_path / "a.jsonl", 0, 60), _ratings(tmp_path / "b.jsonl", 60, 60)
    data = tmp_path / "kafka"
    bootstrap = _broker("start.sh", data)
    url = f"kafka://{bootstrap}?prefix=o.&timeout=3"
    try:
        _ingest(url, first, tmp_path)
        with _process(["join", "p.py", "--log", url], tmp_path) as join, \
                _process(["train", "p.py", "--log", url, "--registry", "reg"],
                         tmp_path) as train:
            _wait(lambda: len(_sample_ids(bootstrap, "o.")) == 59, "the first samples")
            _wait(lambda: _judged(tmp_path / "reg"), "the trainer's gate")  # started
            _away(data, 8)  # the roles' questions outlive the 3 s timeout meanwhile
            _ingest(url, then, tmp_path)
            _wait(lambda: len(_sample_ids(bootstrap, "o.")) == 119 or
                  join.poll() is not None, "the samples after the outage")
            time.sleep(3)  # the trainer's turns after the joiner's
            joined, trained = _stopped(join, train)
            said = joined + trained
        assert "the log failed under the joiner" in said, said
        assert "the log answers again: the trainer went on from the checkpoints" in said, said
        # what each did, each sample once (records read again after the outage, twice)
        assert "119 samples, 0 dead letters" in said, said
        assert "stopped: 118 samples learned" in said, said
        # the samples of an uninterrupted joiner, each once, in its order
        _ingest(f"kafka://{bootstrap}?prefix=r.", first, tmp_path)
        _ingest(f"kafka://{bootstrap}?prefix=r.", then, tmp_path)
        subprocess.run([sys.executable, "-m", "livelearn", "-q", "join", "p.py", "--log",
                        f"kafka://{bootstrap}?prefix=r.", "--until-idle"], cwd=tmp_path,
                       check=True, capture_output=True)
        assert _sample_ids(bootstrap, "o.") == _sample_ids(bootstrap, "r.")[:119]
    finally:
        _broker("stop.sh", data)


#: PIPELINE_FILE, but the label of a rating of movie m0 is None (the trainer dead-letters
#: its sample), and a version is published every 10 samples learned.
LETTERS_FILE = PIPELINE_FILE.replace(
    'label="stars"', 'label=lambda e: {"stars": None if e.payload["movie"] == "m0" '
    'else e.payload["stars"]}').replace(
    'target="stars"', 'target="stars",\n    policies=spec.Policies(publish_every_samples=10)')


def _letters(bootstrap: str, prefix: str) -> list[dict]:
    log = KafkaLog(bootstrap, prefix, timeout_s=10)
    try:
        return [orjson.loads(r.value) for t, p in log.topic_partitions(["dead_letters"])
                for r in log.read(t, p, 0, 10_000)]
    finally:
        log.close()


def _by_reason(letters: list[dict], source: str) -> dict[str, int]:
    """The letters whose source is in topic ``source``, counted by reason."""
    counts: dict[str, int] = {}
    for letter in letters:
        if letter["source"].startswith(f"{source}/"):
            counts[letter["reason"]] = counts.get(letter["reason"], 0) + 1
    return counts


def test_join_and_train_count_the_dead_letters_of_the_whole_run_across_an_outage(
        tmp_path: Path) -> None:
    """The stop line of a live `join` and `train` that waited out an outage counts the
    dead letters written before it too. Before, the trainer's counted only those written
    after it went on from its newest version (its count restarted there); the joiner's
    were right."""
    (tmp_path / "p.py").write_text(LETTERS_FILE)
    first, then = _ratings(tmp_path / "a.jsonl", 0, 60), _ratings(tmp_path / "b.jsonl", 60, 60)
    copies = tmp_path / "copies.jsonl"  # duplicates for the joiner: 4 before, 3 after
    copies.write_bytes(b"".join(first.read_bytes().splitlines(keepends=True)[:4]))
    data = tmp_path / "kafka"
    bootstrap = _broker("start.sh", data)
    url = f"kafka://{bootstrap}?prefix=o.&timeout=3"

    seen: list[tuple[int, int]] = []  # the letters of the joiner and the trainer, last read

    def lettered(joined: int, trained: int) -> bool:
        """Whether the joiner and the trainer wrote at least so many letters in all."""
        letters = _letters(bootstrap, "o.")
        seen[:] = [(sum(_by_reason(letters, "ratings").values()),
                    sum(_by_reason(letters, "samples").values()))]
        return seen[0][0] >= joined and seen[0][1] >= trained

    try:
        _ingest(url, first, tmp_path)
        _ingest(url, copies, tmp_path)
        with _process(["join", "p.py", "--log", url], tmp_path) as join, \
                _process(["train", "p.py", "--log", url, "--registry", "reg"],
                         tmp_path) as train:
            # m0 is each fifth rating: 12 of the first 59 samples
            _wait(lambda: lettered(4, 12), "the letters before the outage")
            _wait(lambda: (tmp_path / "reg" / "index.db").is_file() and
                  len(Registry(tmp_path / "reg").versions()) >= 4, "versions")
            _away(data, 8)  # the roles' questions outlive the 3 s timeout meanwhile
            _ingest(url, then, tmp_path)
            copies.write_bytes(b"".join(then.read_bytes().splitlines(keepends=True)[:3]))
            _ingest(url, copies, tmp_path)
            try:
                _wait(lambda: lettered(7, 24) or join.poll() is not None or
                      train.poll() is not None, "the letters after the outage", 240)
            except AssertionError as e:  # how far they came
                raise AssertionError(f"{e}; (joiner's, trainer's) letters: {seen}") from None
            joined, trained = _stopped(join, train)
        assert "the log answers again: the trainer went on from the checkpoints" in trained
        letters = _letters(bootstrap, "o.")
        assert (sum(_by_reason(letters, "ratings").values()),
                sum(_by_reason(letters, "samples").values())) == (7, 24), letters
        assert f"119 samples, {dead_letters_said(_by_reason(letters, 'ratings'))}\n" \
            in joined, joined
        assert f"this run wrote {dead_letters_said(_by_reason(letters, 'samples'))}\n" \
            in trained, trained
    finally:
        _broker("stop.sh", data)


def test_run_serves_through_a_broker_outage_and_its_roles_go_on(tmp_path: Path) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    data = tmp_path / "kafka"
    bootstrap = _broker("start.sh", data)
    url, port = f"kafka://{bootstrap}?prefix=u.&timeout=3", free_port()
    server = f"http://127.0.0.1:{port}"
    try:
        _ingest(url, _ratings(tmp_path / "a.jsonl", 0, 30), tmp_path)
        with _process(["run", "p.py", "--log", url, "--workdir", "w", "--port", str(port)],
                      tmp_path) as run:
            _wait(lambda: _up(server), "the server")
            _wait(lambda: len(_sample_ids(bootstrap, "u.")) == 29, "the first samples")
            _broker("stop.sh", data)
            time.sleep(8)
            assert run.poll() is None
            assert httpx.get(f"{server}/healthz").status_code == 200
            _broker("start.sh", data)
            _ingest(url, _ratings(tmp_path / "b.jsonl", 30, 30), tmp_path)
            _wait(lambda: len(_sample_ids(bootstrap, "u.")) == 59 or run.poll() is not None,
                  "the samples after the outage")
            assert run.poll() is None
            _wait(lambda: httpx.get(f"{server}/readyz").status_code == 200, "ready")
            assert len(set(_sample_ids(bootstrap, "u."))) == 59
    finally:
        _broker("stop.sh", data)


def test_a_topic_deleted_under_a_joiner_stops_it_naming_the_topic(tmp_path: Path,
                                                                   kafka_bootstrap: str) -> None:
    """The broker answers that the topic is unknown: the joiner stops with one line saying
    it was deleted, rather than wait for it (before: librdkafka's UNKNOWN_TOPIC_OR_PART
    once the timeout ran out, as if the broker were away)."""
    from confluent_kafka.admin import AdminClient

    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    prefix = f"d{uuid.uuid4().hex[:12]}."
    url = f"kafka://{kafka_bootstrap}?prefix={prefix}&timeout=3"
    _ingest(url, _ratings(tmp_path / "a.jsonl", 0, 20), tmp_path)
    with _process(["join", "p.py", "--log", url], tmp_path) as join:
        _wait(lambda: len(_sample_ids(kafka_bootstrap, prefix)) == 19, "the samples")
        name = f"{prefix}ratings"
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        admin.delete_topics([name])[name].result(10)
        assert join.wait(60) == 2
        assert join.stdout is not None
        said = join.stdout.read().decode().splitlines()
    assert said[-1] == (
        f"livelearn: topic 'ratings' (as '{name}') no longer exists in kafka://"
        f"{kafka_bootstrap}: it was deleted while this process used it, and its records "
        f"with it. A role started again would make it anew, empty, and its offsets would "
        f"count other records: start over in a new log and registry (another ?prefix= in "
        f"the log URL, a new --registry) and ingest the events again"), said


def test_a_joiner_refuses_an_input_topic_deleted_and_made_again(tmp_path: Path,
                                                                kafka_bootstrap: str) -> None:
    """Its checkpoint's offsets count the records of the topic it read: on the topic made
    anew (by the next ingest) the joiner refuses to start, naming it. Before, it went on
    from those offsets and skipped as many of the new topic's records without a word
    (20 of 30 here)."""
    from confluent_kafka.admin import AdminClient

    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    prefix = f"m{uuid.uuid4().hex[:12]}."
    url = f"kafka://{kafka_bootstrap}?prefix={prefix}"
    join = [sys.executable, "-m", "livelearn", "-q", "join", "p.py", "--log", url,
            "--until-idle"]
    _ingest(url, _ratings(tmp_path / "a.jsonl", 0, 20), tmp_path)
    subprocess.run(join, cwd=tmp_path, check=True, capture_output=True)
    name = f"{prefix}ratings"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.delete_topics([name])[name].result(10)
    deadline = time.monotonic() + 30
    while name in admin.list_topics(timeout=10).topics:  # deleted a moment later
        assert time.monotonic() < deadline
        time.sleep(0.2)
    _ingest(url, _ratings(tmp_path / "b.jsonl", 100, 30), tmp_path)
    done = subprocess.run(join, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith(
        "livelearn: joiner group 'joiner': topic 'ratings' is not the one its checkpoint "
        "read (id "), done.stderr
    assert "it was deleted and made again" in done.stderr, done.stderr


def test_a_server_whose_predictions_topic_was_deleted_answers_503_naming_it(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    """/predict's append to a topic the broker no longer knows: 503 naming the topic, and
    /readyz says so (a NotFound of the log is no 404 of the request)."""
    from confluent_kafka.admin import AdminClient

    from test_serve_errors import _serving

    prefix = f"p{uuid.uuid4().hex[:12]}."
    log = KafkaLog(kafka_bootstrap, prefix, timeout_s=3)
    try:
        with _serving(tmp_path, log) as server, httpx.Client(base_url=server.url,
                                                             timeout=60) as http:
            request = {"user_id": "u1", "items": ["i1"], "ts": 1_704_067_200_000}
            assert http.post("/predict", json=request).status_code == 200
            name = f"{prefix}predictions"
            admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
            admin.delete_topics([name])[name].result(10)
            answer = http.post("/predict", json=request)
            assert answer.status_code == 503, answer.text
            assert f"topic 'predictions' (as '{name}') no longer exists" in answer.text
            ready = http.get("/readyz")
            assert ready.status_code == 503 and "no longer exists" in ready.text, ready.text
    finally:
        log.close()
