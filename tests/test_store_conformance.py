"""One suite over every Store backend: memory and a real Redis server.

Redis: ``LIVELEARN_REDIS=host:port`` names a server to use (each test keeps to
its own namespace and deletes it after); otherwise one is started for the
session with scripts/redis/start.sh on a free port in a temporary directory.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from livelearn.demo import free_port
from livelearn.errors import BadInput, ConfigError, Unavailable
from livelearn.tables.memory import SWEEP_EVERY
from livelearn.tables.store import Store, open_store

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["memory", "redis"]
OpenStore = Callable[..., Store]
HOUR = 3_600_000


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest) -> Iterator[OpenStore]:
    """Opens stores of one backend on one fresh URL, or a new one with ``fresh=True``.

    Options go in the URL's query. Every store is cleared and closed after the test.
    """
    def url(name: str) -> str:
        if request.param == "memory":
            return f"memory://{name}?"
        return f"redis://{request.getfixturevalue('redis_address')}/0?namespace={name}&"

    base = url(f"t{uuid.uuid4().hex}")
    opened: list[Store] = []

    def make(fresh: bool = False, **options: int) -> Store:
        where = url(f"t{uuid.uuid4().hex}") if fresh else base
        store = open_store(where + "&".join(f"{k}={v}" for k, v in options.items()))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.clear()
        store.close()


@pytest.fixture
def store(make_store: OpenStore) -> Store:
    return make_store()


def test_put_then_get_returns_rows_with_their_types(store: Store) -> None:
    rows = {"u1": {"age": 31, "score": 0.25, "name": "ada", "vip": True, "city": None},
            "u:2": {"age": 40}}
    store.put_rows("users", rows, ts_ms=1_000)
    store.put_rows("items", {"u1": {"price": 9.5}}, ts_ms=1_000)
    assert store.get_rows("users", ["u1", "u:2"]) == rows
    assert store.get_rows("items", ["u1"]) == {"u1": {"price": 9.5}}
    got = store.get_rows("users", ["u1"])["u1"]
    assert type(got["age"]) is int and type(got["score"]) is float and got["vip"] is True


def test_missing_keys_and_tables_are_left_out(store: Store) -> None:
    store.put_rows("users", {"u1": {"a": 1}}, ts_ms=5)
    assert store.get_rows("users", ["nope", "u1", "also-nope"]) == {"u1": {"a": 1}}
    assert store.get_rows("no_table", ["u1"]) == {}
    assert store.get_rows("users", []) == {}
    assert store.get_rows("users", ["u1"], as_of_ms=4) == {}


def test_a_read_as_of_t_never_sees_a_later_version(make_store: OpenStore) -> None:
    store = make_store(max_versions=6)
    rng = random.Random(7)
    kept: dict[str, dict[int, int]] = {}  # key -> ts -> value: the versions the bound keeps
    for _ in range(150):  # out of order, with repeated times (a repeat replaces)
        key, ts = f"k{rng.randrange(5)}", rng.randrange(0, 40) * 10
        value = rng.randrange(1000)
        store.put_rows("t", {key: {"written_at": ts, "v": value}}, ts_ms=ts)
        versions = kept.setdefault(key, {})
        versions[ts] = value
        for old in sorted(versions)[:-6]:
            del versions[old]
    keys = [f"k{i}" for i in range(6)]
    for as_of in [*range(-5, 420, 7), None]:
        got = store.get_rows("t", keys, as_of_ms=as_of)
        for key in keys:
            times = [t for t in kept.get(key, {}) if as_of is None or t <= as_of]
            if not times:
                assert key not in got
                continue
            assert got[key] == {"written_at": max(times), "v": kept[key][max(times)]}
            assert as_of is None or got[key]["written_at"] <= as_of


def test_each_key_keeps_its_newest_versions(make_store: OpenStore) -> None:
    store = make_store(max_versions=3)
    for ts in (100, 200, 300, 400, 500):
        store.put_rows("t", {"k": {"v": ts}}, ts_ms=ts)
    assert store.get_rows("t", ["k"], as_of_ms=350) == {"k": {"v": 300}}
    assert store.get_rows("t", ["k"], as_of_ms=299) == {}, "dropped versions are not read"
    store.put_rows("t", {"k": {"v": 50}}, ts_ms=50)  # older than every kept one: dropped
    assert store.get_rows("t", ["k"], as_of_ms=60) == {}
    assert store.get_rows("t", ["k"]) == {"k": {"v": 500}}


def test_replace_table_leaves_exactly_the_rows_given(make_store: OpenStore) -> None:
    """What a server restarted on a shared store relies on: a key or a version the new
    rows leave out is gone (put_rows only ever adds), other tables and the counters stay."""
    store = make_store(max_versions=3)
    for ts in (100, 200, 300):
        store.put_rows("items", {"a": {"v": ts}, "b": {"v": ts}, "c*[x]": {"v": ts}}, ts_ms=ts)
    store.put_rows("items:x", {"b": {"v": "other table"}}, ts_ms=0)
    store.put_rows("users", {"a": {"v": "user"}}, ts_ms=0)
    store.add("clicks", "b", 50, "e1")
    store.replace_table("items", {"a": {300: {"v": "new"}, 100: {"v": 1}},
                                  "d": {0: {"v": 0}, 10: {"v": 10}, 20: {"v": 20},
                                        30: {"v": 30}},
                                  "gone": {}})
    keys = ["a", "b", "c*[x]", "d", "gone"]
    assert store.get_rows("items", keys) == {"a": {"v": "new"}, "d": {"v": 30}}
    assert store.get_rows("items", keys, as_of_ms=250) == {"a": {"v": 1}, "d": {"v": 30}}
    assert store.get_rows("items", ["d"], as_of_ms=5) == {}, "its 3 newest versions only"
    assert store.snapshot()["rows"] == {
        "items": {"a": [[100, {"v": 1}], [300, {"v": "new"}]],
                  "d": [[10, {"v": 10}], [20, {"v": 20}], [30, {"v": 30}]]},
        "items:x": {"b": [[0, {"v": "other table"}]]}, "users": {"a": [[0, {"v": "user"}]]}}
    assert store.count("clicks", "b", 60_000, 60_000) == 1
    store.replace_table("items", {})
    assert store.get_rows("items", keys) == {}
    assert store.get_rows("items:x", ["b"]) == {"b": {"v": "other table"}}
    with pytest.raises(BadInput, match="table 'items', key 'a', field 'f'"):
        store.replace_table("items", {"z": {0: {"f": 1}}, "a": {0: {"f": [1]}}})
    assert store.get_rows("items", ["z", "a"]) == {}, "a bad row: nothing written"


def test_concurrent_replaces_of_a_table_leave_one_whole(make_store: OpenStore) -> None:
    """Servers restarting at once on one store with different files: the table ends as one
    file's, never the union (each replace listed the keys before the other wrote its own),
    and a reader meanwhile sees one whole content at a time."""
    contents = {name: {f"{name}{i}": {0: {"v": name}} for i in range(3_000)}
                for name in ("a", "b", "c")}
    probe = [key for name in contents for key in (f"{name}0", f"{name}2999")]
    writers, reader = [make_store() for _ in contents], make_store()
    seen: list[set[object]] = []
    done = threading.Event()
    start = threading.Barrier(3)

    def replace(store: Store, name: str) -> None:
        start.wait()
        store.replace_table("t", contents[name])

    def read() -> None:
        while not done.is_set():
            seen.append({row["v"] for row in reader.get_rows("t", probe).values()})

    for _ in range(3):
        writers[0].replace_table("t", contents["a"])
        done.clear()
        threads = [threading.Thread(target=replace, args=(writers[1], "b")),
                   threading.Thread(target=replace, args=(writers[2], "c")),
                   threading.Thread(target=read)]
        for thread in threads:
            thread.start()
        start.wait()
        for thread in threads[:2]:
            thread.join(60)
        done.set()
        threads[2].join(60)
        final = reader.snapshot()["rows"]["t"]
        names = {versions[0][1]["v"] for versions in final.values()}
        assert len(names) == 1 and len(final) == 3_000, f"a mix of {sorted(names)}"
    assert seen and all(len(s) == 1 for s in seen), "a read saw two contents at once"


def exact_count(events: list[tuple[str, int, str]], key: str, window_ms: int,
                as_of_ms: int) -> int:
    """The batch definition: distinct event ids of ``key`` with ts in [as_of - window, as_of)."""
    return len({i for k, ts, i in events if k == key and as_of_ms - window_ms <= ts < as_of_ms})


def test_counters_match_a_batch_computation(make_store: OpenStore) -> None:
    store = make_store(retention_ms=5_000)
    rng = random.Random(3)
    events = [(f"k{rng.randrange(4)}", rng.randrange(0, 3_000), f"e{i}") for i in range(600)]
    events += rng.sample(events, 50)  # retried: counted once
    for i in range(0, len(events), 50):  # in batches, out of time order
        store.add_many("clicks", events[i:i + 50])
    store.add("clicks", "k0", 1_234, "one more")
    events.append(("k0", 1_234, "one more"))
    keys = ["k0", "k1", "k2", "k3", "never"]
    for _ in range(60):
        window, as_of = rng.randrange(1, 5_001), rng.randrange(-100, 3_200)
        expected = {k: exact_count(events, k, window, as_of) for k in keys}
        assert store.counts("clicks", keys, window, as_of) == expected
    assert store.count("clicks", "k1", 5_000, 3_000) == exact_count(events, "k1", 5_000, 3_000)


def test_a_count_never_sees_the_event_at_its_time_or_later(make_store: OpenStore) -> None:
    store = make_store(retention_ms=1_000)
    store.add_many("views", [("k", ts, f"e{ts}") for ts in (100, 999, 1_000, 1_001)])
    assert store.count("views", "k", 1_000, 1_000) == 2
    assert store.count("views", "k", 900, 1_000) == 2, "[100, 1000) holds its first ms"
    assert store.count("views", "k", 899, 1_000) == 1
    assert store.count("views", "k", 1, 1_001) == 1
    assert store.count("views", "k", 1_000, 100) == 0


def test_old_events_expire_but_recent_windows_stay_exact(make_store: OpenStore) -> None:
    store = make_store(retention_ms=100)
    events = [("k", ts, f"e{ts}") for ts in range(0, 5_000, 3)]
    for i in range(0, len(events), 100):
        store.add_many("c", events[i:i + 100])
    for window in (10, 55, 100):
        assert store.count("c", "k", window, 5_000) == exact_count(events, "k", window, 5_000)
    assert store.count("c", "k", 100, 1_000) == 0, "dropped: older than the retention"
    kept = store.snapshot()["counters"]["c"]["k"]
    assert len(kept) == exact_count(events, "k", 101, 4_999), "those within 100 ms of the newest"


@pytest.mark.parametrize("seed", [1, 2])
def test_expiry_and_ids_that_come_again_match_the_definition(make_store: OpenStore,
                                                             seed: int) -> None:
    """Each add keeps, of a key's events, those within the retention of its newest, and
    ignores an id it keeps: checked against that definition after every batch of random
    adds (mostly in time order, some late, some ids again, some after they expired),
    over a key hot enough that expired events are deleted in bulk."""
    retention = 200
    store = make_store(retention_ms=retention)
    rng = random.Random(seed)
    kept: dict[str, list[tuple[int, str]]] = {"hot": [], "cold": []}
    now = 0
    for _ in range(150):
        batch = []
        for _ in range(rng.randrange(1, 30)):
            now += rng.randrange(0, 4)
            key = "hot" if rng.random() < 0.9 else "cold"
            ts = now - rng.randrange(0, 300) if rng.random() < 0.1 else now
            again = rng.random() < 0.2  # an id of any time so far: some kept, some expired
            event_id = f"e{rng.randrange(now + 1)}" if again else f"n{now}.{len(batch)}"
            batch.append((key, ts, event_id))
            events = kept[key]
            if all(i != event_id for _, i in events):
                events.append((ts, event_id))
                newest = max(t for t, _ in events)
                kept[key] = [(t, i) for t, i in events if t >= newest - retention]
        store.add_many("c", batch)
        as_of, window = now + rng.randrange(-250, 5), rng.randrange(1, retention + 1)
        assert store.counts("c", ["hot", "cold"], window, as_of) == {
            k: sum(1 for t, _ in events if as_of - window <= t < as_of)
            for k, events in kept.items()}
    snapshot = store.snapshot()["counters"]["c"]
    assert {k: sorted(map(tuple, v)) for k, v in snapshot.items()} == {
        k: sorted(v) for k, v in kept.items() if v}


def test_an_event_ahead_of_the_wall_clock_expires_no_present_one(make_store: OpenStore
                                                                  ) -> None:
    """A key keeps its events within the retention of its newest or of the wall clock,
    whichever is earlier: one event hours ahead (a producer's clock; the servers refuse
    more than 5 minutes ahead, the store does not) does not expire the present ones, so
    windows as of now stay exact, and events older than the retention behind the wall
    clock still expire."""
    store = make_store(retention_ms=2 * HOUR)
    now = int(time.time() * 1000)
    store.add_many("c", [("k", now - back, f"p{back}") for back in (0, 1_000, HOUR,
                                                                     2 * HOUR - 60_000)])
    store.add("c", "k", now + 3 * HOUR, "ahead")
    store.add_many("c", [("k", now + 10, "after"), ("k", now, "p0")])  # p0: counted already
    assert store.count("c", "k", HOUR, now + 11) == 3
    assert store.count("c", "k", 2 * HOUR, now + 11) == 5
    assert store.count("c", "k", HOUR, now + 3 * HOUR + 1) == 1
    store.add("c", "k", now - 3 * HOUR, "old")
    assert store.count("c", "k", 2 * HOUR, now - HOUR) == 1, "old: expired by the wall clock"
    assert sorted(i for _, i in store.snapshot()["counters"]["c"]["k"]) == sorted(
        ["after", "ahead", "p0", "p1000", f"p{HOUR}", f"p{2 * HOUR - 60_000}"])


def test_an_event_ahead_of_the_wall_clock_leaves_other_keys_be(make_store: OpenStore
                                                               ) -> None:
    """A key idle for less than the retention stays, however far ahead another key's
    newest event is (the memory store sweeps idle keys every SWEEP_EVERY events: it
    dropped every key more than the retention behind a future event)."""
    store = make_store(retention_ms=2 * HOUR)
    now = int(time.time() * 1000)
    store.add("c", "quiet", now - 1_000, "q")
    store.add("c", "ahead", now + 3 * HOUR, "a")
    store.add_many("c", [("busy", now, f"b{i}") for i in range(SWEEP_EVERY)])
    assert store.counts("c", ["quiet", "busy"], HOUR, now + 1) == {
        "quiet": 1, "busy": SWEEP_EVERY}


def test_large_batches_and_times_are_kept_whole(make_store: OpenStore) -> None:
    store = make_store(retention_ms=10)
    keys = [f"k{i}" for i in range(1_234)]
    now = 2**53 - 1  # the largest time every backend stores exactly
    store.put_rows("t", {k: {"i": i} for i, k in enumerate(keys)}, ts_ms=now)
    assert store.get_rows("t", keys, as_of_ms=now) == {k: {"i": i} for i, k in enumerate(keys)}
    store.add_many("c", [(k, now - back, f"{k}/{back}") for k in keys for back in (0, 1, 2)])
    assert store.counts("c", keys, 2, now) == dict.fromkeys(keys, 2)
    assert store.counts("c", keys, 3, now - 1) == dict.fromkeys(keys, 1)


def test_replacing_a_table_takes_memory_in_proportion_to_its_rows(
        make_store: OpenStore) -> None:
    """A server loads its tables with replace_table at start. Redis took over 4 KB per
    version while the transaction was built (orjson's bytes sit in a buffer of 4 KB or
    more), so a table of a million rows needed over 4 GB; each takes about what its
    values do now (some 400 bytes for these rows, in either backend)."""
    store = make_store()
    versions = {f"k{i}": {HOUR * v: {"price": float(i), "cat": f"c{i % 50}", "n": i}
                          for v in (1, 2)} for i in range(10_000)}
    tracemalloc.start()
    try:
        store.replace_table("t", versions)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_500 * 20_000, f"{peak / 20_000:.0f} bytes per version at the peak"
    assert store.get_rows("t", ["k7", "k9999"], HOUR) == {
        "k7": {"price": 7.0, "cat": "c7", "n": 7}, "k9999": {"price": 9999.0, "cat": "c49",
                                                          "n": 9999}}


def test_windows_longer_than_the_retention_are_refused(make_store: OpenStore) -> None:
    store = make_store(retention_ms=60_000)
    with pytest.raises(ConfigError, match="window_ms"):
        store.count("c", "k", 60_001, 0)
    with pytest.raises(ConfigError, match="window_ms"):
        store.count("c", "k", 0, 0)


def test_two_stores_on_one_url_see_each_others_writes(make_store: OpenStore) -> None:
    a, b = make_store(), make_store()
    a.put_rows("items", {"i1": {"p": 1}}, ts_ms=10)
    b.put_rows("items", {"i2": {"p": 2}}, ts_ms=20)
    a.add("clicks", "i1", 100, "e1")
    b.add_many("clicks", [("i1", 150, "e2"), ("i1", 100, "e1")])
    for store in (a, b):
        assert store.get_rows("items", ["i1", "i2"]) == {"i1": {"p": 1}, "i2": {"p": 2}}
        assert store.count("clicks", "i1", 60_000, 59_999) == 2


def test_bad_values_are_refused_naming_the_field(store: Store) -> None:
    for row in ({"f": {"nested": 1}}, {"f": float("nan")}, {"f": [1]}, {"f": 2**64}):
        with pytest.raises(BadInput, match="table 'users', key 'u1', field 'f'"):
            store.put_rows("users", {"u1": row}, ts_ms=1)
    with pytest.raises(BadInput, match="ts_ms"):
        store.put_rows("users", {"u1": {"f": 1}}, ts_ms=1.5)  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="counter 'c'"):
        store.add("c", "k", 1, 2)  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="counter 'c': ts_ms"):
        store.add("c", "k", 1.5, "e")  # type: ignore[arg-type]
    assert store.get_rows("users", ["u1"]) == {}


def test_snapshot_restores_into_any_backend(store: Store, make_store: OpenStore) -> None:
    store.put_rows("t", {"a": {"v": 1}, "b:c": {"v": "x"}}, ts_ms=100)
    store.put_rows("t", {"a": {"v": 2}}, ts_ms=200)
    store.add_many("c", [("a", 0, "e1"), ("a", 60_000, "e2"), ("a", 60_000, "e3")])
    snap = store.snapshot()
    for other in (open_store("memory://"), make_store(fresh=True)):
        other.put_rows("t", {"stale": {"v": 0}}, ts_ms=1)
        other.restore(snap)
        assert other.snapshot() == snap
        assert other.get_rows("t", ["a", "b:c", "stale"], as_of_ms=150) == {
            "a": {"v": 1}, "b:c": {"v": "x"}}
        assert other.count("c", "a", 120_000, 119_999) == 3


def test_store_urls_name_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="'mongo'"):
        open_store("mongo://db:27017")
    with pytest.raises(ConfigError, match="'nothing'"):
        open_store("nothing")
    with pytest.raises(ConfigError, match="unknown option 'max_version'"):
        open_store("memory://?max_version=3")
    with pytest.raises(ConfigError, match="'retention_ms' must be a positive integer"):
        open_store("redis://127.0.0.1:1/0?retention_ms=0")
    # a digit int() does not take ("²".isdigit() is true): a traceback before
    with pytest.raises(ConfigError, match="'max_versions' must be a positive integer"):
        open_store("memory://?max_versions=²")
    # more than every backend holds exactly: Redis opened, then refused each count it was
    # asked ("value is not an integer or out of range"); int() refuses 4,300 digits
    for option in ("retention_ms", "max_versions"):
        for value in (str(2**53 + 1), "1" * 5000):
            for base in ("memory://", "redis://127.0.0.1:1/0"):
                with pytest.raises(ConfigError, match=f"'{option}' must be a positive integer "
                                                      f"of at most 2\\*\\*53"):
                    open_store(f"{base}?{option}={value}")
    assert open_store(f"memory://?retention_ms={2**53}&max_versions={2**53}")


def test_a_redis_database_that_is_no_number_or_not_there_is_named(redis_address: str) -> None:
    with pytest.raises(ConfigError, match="DB a number"):
        open_store(f"redis://{redis_address}/x")
    with pytest.raises(ConfigError, match="DB a number"):
        open_store(f"redis://{redis_address}/²")
    with pytest.raises(ConfigError, match="the server refused it: DB index is out of range"):
        open_store(f"redis://{redis_address}/99")


def test_an_unreachable_redis_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="unreachable"):
        open_store(f"redis://127.0.0.1:{free_port()}/0")


def test_another_process_sees_the_writes(redis_address: str) -> None:
    """What several ``livelearn serve`` processes rely on: one Redis URL, one content."""
    url = f"redis://{redis_address}/0?namespace=t{uuid.uuid4().hex}"
    store = open_store(url)
    try:
        store.put_rows("items", {"i1": {"p": 1}}, ts_ms=10)
        code = ("import sys; from livelearn.tables.store import open_store; "
                "s = open_store(sys.argv[1]); "
                "s.add_many('clicks', [('i1', 100, str(i)) for i in range(5)]); "
                "print(s.get_rows('items', ['i1']))")
        out = subprocess.run([sys.executable, "-c", code, url], check=True, capture_output=True,
                             text=True, timeout=30).stdout
        assert out.strip() == "{'i1': {'p': 1}}"
        assert store.count("clicks", "i1", 60_000, 59_999) == 5
    finally:
        store.clear()
        store.close()


@contextmanager
def private_redis(tmp_path: Path, *args: str, port: int | None = None) -> Iterator[str]:
    """host:port of a redis-server of this test's own, started with ``args`` (on ``port``,
    or a free one)."""
    port = port or free_port()
    server = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                               "--dir", str(tmp_path), "--save", "", "--appendonly", "no",
                               *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                              text=True).stdout.strip() == "PONG":
                break
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_redis_that_may_evict_keys_is_refused(tmp_path: Path) -> None:
    """An evicting Redis would drop rows and counted events without a word."""
    with private_redis(tmp_path, "--maxmemory", "64mb",
                       "--maxmemory-policy", "allkeys-lru") as address:
        with pytest.raises(ConfigError, match="may evict keys .*maxmemory-policy allkeys-lru"
                                              ".*CONFIG SET maxmemory-policy noeviction"):
            open_store(f"redis://{address}/0")
    with private_redis(tmp_path, "--maxmemory", "64mb",
                       "--maxmemory-policy", "volatile-ttl") as address:
        with pytest.raises(ConfigError, match="volatile-ttl"):  # counters' keys have a TTL
            open_store(f"redis://{address}/0")
    # no limit: nothing is evicted, whatever the policy
    with private_redis(tmp_path, "--maxmemory-policy", "allkeys-lru") as address:
        open_store(f"redis://{address}/0").close()


def test_a_full_redis_refuses_writes_with_a_clear_error(tmp_path: Path) -> None:
    with private_redis(tmp_path, "--maxmemory", "2mb") as address:  # noeviction
        store = open_store(f"redis://{address}/0")
        rows = {f"k{i}": {"text": "x" * 100} for i in range(50_000)}
        with pytest.raises(Unavailable, match="Redis is full .*give it more memory"):
            store.put_rows("items", rows, ts_ms=10)
        with pytest.raises(Unavailable, match="Redis is full"):
            store.add_many("clicks", [(f"k{i}", 100, str(i)) for i in range(50_000)])
        assert store.get_rows("items", ["k0", "k49999"]) == {}  # a batch: all or nothing
        store.put_rows("items", {"k0": {"text": "x"}}, ts_ms=10)  # a batch that fits
        assert store.get_rows("items", ["k0"]) == {"k0": {"text": "x"}}
        store.close()


def test_a_redis_without_config_is_used_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Some hosted Redis disable CONFIG: the policy cannot be read, only warned of."""
    with private_redis(tmp_path, "--rename-command", "CONFIG", "") as address:
        store = open_store(f"redis://{address}/0")
        store.put_rows("items", {"i1": {"p": 1}}, ts_ms=10)
        store.close()
    assert "cannot read Redis's maxmemory-policy" in caplog.text
    assert "make sure it is noeviction" in caplog.text


def test_a_redis_store_learns_of_a_restart_before_it_reads_from_the_server_restarted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Its incarnation is the server's run_id; one without INFO is used with a warning."""
    port = free_port()
    with private_redis(tmp_path, port=port) as address:
        store = open_store(f"redis://{address}/0")
        before = store.incarnation
        store.put_rows("items", {"i1": {"p": 1}}, ts_ms=10)
    assert before and store.incarnation == before
    with private_redis(tmp_path, port=port):
        assert store.get_rows("items", ["i1"]) == {}  # restarted empty
        assert store.incarnation not in ("", before)
        store.close()
    assert "Redis restarted" in caplog.text
    with private_redis(tmp_path, "--rename-command", "INFO", "") as address:
        store = open_store(f"redis://{address}/0")
        store.put_rows("items", {"i1": {"p": 1}}, ts_ms=10)
        assert store.get_rows("items", ["i1"]) == {"i1": {"p": 1}}
        store.close()
    assert "Redis refused INFO" in caplog.text
