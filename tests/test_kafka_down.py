"""A Kafka broker that goes away under a command: the command ends with one line saying
which request failed, not among librdkafka's own messages (a line for each failed
connection, several a second), which show only with ``livelearn -v``. Under a server:
/readyz says so and /healthz and /metrics answer while requests wait on the log. On a
broker of the test's own, started and stopped by scripts/kafka (start.sh, stop.sh)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import KAFKA_SCRIPTS
from livelearn.demo import free_port
from livelearn.errors import Unavailable
from livelearn.log.kafka import KafkaLog
from test_ingest import PIPELINE_FILE, T
from test_serve_errors import _serving

LINE = f'{{"user": "u1", "movie": "m1", "stars": 4, "ts": {T}}}\n'


def test_a_broker_gone_is_one_line_and_librdkafkas_messages_are_for_v(tmp_path: Path) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    data = tmp_path / "kafka"
    started = subprocess.run([str(KAFKA_SCRIPTS / "start.sh"), str(data)], capture_output=True,
                             text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip().rpartition("KAFKA_BOOTSTRAP=")[2]
    try:
        # two ingests from stdin, without and with -v, each writing its first batch (one
        # Kafka transaction) while the broker is up
        ingests = {flags: subprocess.Popen(
            [sys.executable, "-m", "livelearn", *flags, "ingest", str(tmp_path / "p.py"),
             "ratings", "-", "--log", f"kafka://{bootstrap}?prefix=p{len(flags)}.&timeout=5"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for flags in ((), ("-v",))}
        for ingest in ingests.values():
            assert ingest.stdin is not None
            ingest.stdin.write(LINE * 2000)  # ingest.BATCH: one transaction
            ingest.stdin.flush()
        for n in range(2):
            log, deadline = KafkaLog(bootstrap, f"p{n}.", timeout_s=5), time.monotonic() + 30
            while not log.end_offset("ratings", 0) >= 2000:
                assert time.monotonic() < deadline, "the first batch was not written"
                time.sleep(0.2)
            log.close()
    finally:
        subprocess.run([str(KAFKA_SCRIPTS / "stop.sh"), str(data)], timeout=60, check=True)
    done = {flags: ingest.communicate(LINE * 10, timeout=60)[1].splitlines()
            for flags, ingest in ingests.items()}
    for flags, ingest in ingests.items():
        assert ingest.returncode == 2, done[flags]
        assert done[flags][-1].startswith(f"livelearn: kafka://{bootstrap}: a transaction of "
                                          f"10 records failed: ")
        # what was written before (it said nothing: the first 2,000 events were ingested
        # again, their copies dead-lettered)
        assert done[flags][-1].endswith(
            ". Of stdin, the records before line 2001 were written (2000 events, 0 dead "
            "letters) and none from there on: ingest the rest with --from-line 2001 "
            "(ingested again, the joiner dead-letters the copies of records ingested "
            "twice)"), done[flags]
    assert len(done[()]) <= 3, done[()]  # a line per failed connection before: 19 in 5 s
    assert any(" livelearn.log.librdkafka ERROR FAIL " in x and "Connection refused" in x
               for x in done[("-v",)]), done[("-v",)]


def test_a_wrong_address_is_one_line_and_v_shows_the_attempts_meanwhile(tmp_path: Path
                                                                         ) -> None:
    """Nothing listens at the address: the command ends after the URL's timeout with one
    line naming it; with -v, librdkafka's line for each failed connection shows while it
    waits (they were held until a client was polled, and nothing polled at start)."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    (tmp_path / "one.jsonl").write_text(LINE)
    address = f"127.0.0.1:{free_port()}"
    for flags in ((), ("-v",)):
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "livelearn", *flags, "ingest", str(tmp_path / "p.py"),
             "ratings", str(tmp_path / "one.jsonl"), "--log", f"kafka://{address}?timeout=3"],
            capture_output=True, text=True, timeout=60)
        lines = done.stderr.splitlines()
        assert done.returncode == 2, lines
        assert time.monotonic() - began < 20, lines
        assert lines[-1] == (f"livelearn: kafka://{address}: creating topic 'predictions' "
                             f"failed: no answer in 3 s (is {address} a Kafka broker's "
                             f"address? livelearn -v shows each attempt to connect)"), lines
        refused = [x for x in lines if " livelearn.log.librdkafka ERROR FAIL " in x
                   and "Connection refused" in x]
        assert bool(refused) == bool(flags), lines
        assert flags or len(lines) == 1, lines


def test_flink_sql_at_a_wrong_address_says_so_in_one_line(tmp_path: Path) -> None:
    """``livelearn flink-sql`` asks the broker the topics' limits: nothing listening at the
    address is the line a role gives (it was librdkafka's raw _TRANSPORT error)."""
    address = f"127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "livelearn", "flink-sql", "livelearn.sim.pipeline:PIPELINE",
         "--log", f"kafka://{address}?timeout=3"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.splitlines() == [
        f"livelearn: kafka://{address}: looking up topic 'samples' failed: no answer in 3 s "
        f"(is {address} a Kafka broker's address? livelearn -v shows each attempt to "
        f"connect)"]


def _broker(script: str, data: Path) -> str:
    """Run scripts/kafka/``script`` (start.sh or stop.sh) on the broker kept in ``data``;
    the address start.sh prints."""
    done = subprocess.run([str(KAFKA_SCRIPTS / script), str(data)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().rpartition("KAFKA_BOOTSTRAP=")[2]


def test_roles_go_on_when_their_broker_restarts(tmp_path: Path) -> None:
    """A broker restarted under a joiner: the joiner waits while the broker is away and
    learns again who leads each partition, then joins what is ingested after the
    restart. librdkafka answers NOT_LEADER_FOR_PARTITION or _UNKNOWN_PARTITION meanwhile,
    not flagged retriable, and did not look the leader up again by itself: a joiner or
    trainer asking where a partition ends stopped on it."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    data = tmp_path / "kafka"

    def ingest(url: str, first: int, n: int) -> None:
        lines = "".join(f'{{"user": "u{i}", "movie": "m1", "stars": 4, "ts": {T + i}}}\n'
                        for i in range(first, first + n))
        done = subprocess.run([sys.executable, "-m", "livelearn", "-q", "ingest",
                               str(tmp_path / "p.py"), "ratings", "-", "--log", url],
                              input=lines, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    bootstrap = _broker("start.sh", data)
    url = f"kafka://{bootstrap}?prefix=r.&timeout=20"
    try:
        ingest(url, 0, 10)
        joiner = subprocess.Popen([sys.executable, "-m", "livelearn", "join",
                                   str(tmp_path / "p.py"), "--log", url],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log = KafkaLog(bootstrap, "r.", timeout_s=20)
        try:
            def joined() -> set[str]:
                end = log.end_offset("samples", 0)
                return {r.key for r in log.read("samples", 0, 0, end)} if end else set()

            deadline = time.monotonic() + 30
            while "u5" not in joined():
                assert joiner.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            # a role's questions go on through the restart, as a joiner's or trainer's do
            failed: list[str] = []
            restarted = threading.Event()

            def ask() -> None:
                while not restarted.is_set():
                    try:
                        log.end_offset("samples", 0)
                    except Unavailable as e:
                        failed.append(str(e))
                    time.sleep(0.01)

            asking = threading.Thread(target=ask)
            asking.start()
            try:
                _broker("stop.sh", data)
                assert _broker("start.sh", data) == bootstrap  # its config and data kept
                time.sleep(1)
            finally:
                restarted.set()
                asking.join()
            assert not failed, failed[:3]
            ingest(url, 10, 10)
            deadline = time.monotonic() + 30
            while "u15" not in joined():
                assert joiner.poll() is None, joiner.communicate()[0]
                assert time.monotonic() < deadline, "the joiner did not go on"
                time.sleep(0.2)
        finally:
            log.close()
            joiner.terminate()
            joiner.communicate(timeout=30)
    finally:
        _broker("stop.sh", data)


def test_a_server_whose_broker_is_down_is_not_ready_and_answers_at_once(
        tmp_path: Path) -> None:
    """The broker stopped under a server with 50 /predict waiting on the log: /healthz and
    /metrics answer meanwhile (each within the client's 5 s); once an append fails, /readyz
    answers 503 naming it, and the waiting requests and a new one get that 503 at once.
    Before, each waited out the log's timeout (3 s here) in turn, 50 of them: 150 s, every
    thread of the pool held. Stopped again with no request waiting, once one failed:
    /readyz answers 200 once the broker is back, though no request came (a load balancer
    sends none to a server not ready)."""
    data = tmp_path / "kafka"

    def until(what: str, ready: int, http: httpx.Client, within_s: float) -> httpx.Response:
        deadline = time.monotonic() + within_s
        while (reply := http.get("/readyz")).status_code != ready:
            assert time.monotonic() < deadline, f"{what}: /readyz {reply.text}"
            time.sleep(0.2)
        return reply

    log = KafkaLog(_broker("start.sh", data), "s.", timeout_s=3)
    answers: list[int | str] = []

    def predict(url: str, timeout_s: float = 300) -> None:
        try:
            answers.append(httpx.post(f"{url}/predict", json={"user_id": "u1", "items": ["i1"],
                                                              "ts": T}, timeout=timeout_s
                                      ).status_code)
        except httpx.HTTPError as e:
            answers.append(repr(e))

    try:
        with _serving(tmp_path, log) as server, \
                httpx.Client(base_url=server.url, timeout=5) as http:
            predict(server.url)
            assert answers == [200] and http.get("/readyz").status_code == 200
            _broker("stop.sh", data)
            waiting = [threading.Thread(target=predict, args=(server.url,)) for _ in range(50)]
            for thread in waiting:
                thread.start()
            assert http.get("/healthz").json()["status"] == "ok"
            assert "livelearn_predictions_total 1\n" in http.get("/metrics").text
            down = until("the broker stopped", 503, http, 60)
            assert down.json()["detail"].startswith(
                f"the log failed the server's last append: kafka://{log.bootstrap}: "), down.text
            deadline = time.monotonic() + 30  # 50 timeouts of the log: 150 s
            for thread in waiting:
                thread.join(max(0.0, deadline - time.monotonic()))
            assert not any(thread.is_alive() for thread in waiting)
            predict(server.url, timeout_s=2)  # less than the log's timeout
            assert answers == [200] + [503] * 51, answers
            _broker("start.sh", data)
            until("the broker restarted", 200, http, 60)
            predict(server.url)
            assert answers[-1] == 200
            # no request waiting: only the log's answer to /readyz's probe ends the failing
            _broker("stop.sh", data)
            predict(server.url)
            assert answers[-1] == 503
            until("an append failed", 503, http, 5)
            _broker("start.sh", data)
            until("the broker restarted", 200, http, 60)
            predict(server.url)
            assert answers[-1] == 200
    finally:
        _broker("stop.sh", data)
        log.close()


def test_a_servers_first_append_after_a_long_outage_is_written(tmp_path: Path) -> None:
    """A server's appends (a transaction of no group) with the broker away longer than the
    transaction timeout (15 s: the records time out, under the log's 30 s timeout): once
    the broker answers again, the next append is written. Before, librdkafka purged its
    records (_PURGE_QUEUE) and it failed too: a 503 to the first /predict after the
    outage, and /readyz back to 503, though the broker was up."""
    data = tmp_path / "kafka"
    log = KafkaLog(_broker("start.sh", data), "o.")
    try:
        log.create_topic("predictions")
        with log.atomic():
            log.append("predictions", [("a", b"{}")])
        _broker("stop.sh", data)
        try:
            with log.atomic():
                log.append("predictions", [("b", b"{}")])
            raise AssertionError("appended with the broker stopped")
        except Unavailable as e:
            assert "Message timed out" in str(e), e
        _broker("start.sh", data)
        deadline = time.monotonic() + 60
        while True:  # as a server's probe asks (serve.health)
            try:
                log.end_offset("predictions", 0)
                break
            except Unavailable:
                assert time.monotonic() < deadline, "the broker did not come back"
                time.sleep(0.2)
        for key in ("c", "d"):
            with log.atomic():
                log.append("predictions", [(key, b"{}")])
        end = log.end_offset("predictions", 0)
        assert [r.key for r in log.read("predictions", 0, 0, end)
                if r.value == b"{}"] == ["a", "c", "d"]
    finally:
        _broker("stop.sh", data)
        log.close()


def test_a_read_whose_topic_lookup_finds_no_broker_is_unavailable() -> None:
    """A read asks where the partition ends, then (the first time, and after a read that
    failed) looks the topic up before it assigns it: a broker gone between the two is
    Unavailable, which a live role waits out (outage.py). Before, librdkafka's raw
    KafkaException (_TRANSPORT) came out of the read, and the role stopped on it with a
    traceback. Asked here of an address where no broker listens."""
    log = KafkaLog(f"127.0.0.1:{free_port()}", "x.", timeout_s=1)
    with pytest.raises(Unavailable, match="looking up topic 'x.ratings' failed: no answer in 1 s"):
        log._seek("x.ratings", 0, 0)
