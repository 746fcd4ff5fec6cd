"""A Store in Redis (``redis://HOST:PORT/DB?namespace=NAME``), shared by many processes.

Layout, every key under ``NAME:`` (default ``livelearn``); a name is prefixed
with its length so table, counter and key names may hold any character:

- ``NAME:r:<len>:<table>:<key>`` a sorted set of versions: score = ts_ms,
  member = JSON ``[ts_ms, row]``; the newest ``max_versions`` are kept.
- ``NAME:g:<len>:<table>:`` a count of the table's ``replace_table`` calls:
  each one WATCHes it while it lists the table's keys (SCAN) and increments it
  in the transaction that deletes those it leaves out and writes the rest, and
  starts again if another replace of the table came in between.
- ``NAME:c:<len>:<counter>:<key>`` a sorted set of counted events: score =
  ts_ms, member = event id (ZADD NX: an id counts once). A Lua script adds and
  drops the events older than ``retention_ms`` before the newest or before the
  adding process's wall clock, whichever is earlier; ZCOUNT counts a window.
  The set expires when no event came for ``retention_ms`` (at least one hour)
  of wall-clock time.

Each batch is one round trip; writes run in MULTI/EXEC, so a reader sees all of
a batch or none. Durability is the Redis server's (RDB / AOF as configured): a
Redis restarted may hold less than it was given (nothing, without persistence;
its last RDB snapshot, after a crash). Each connection the store opens asks the
server its ``run_id`` (INFO server), which a restart changes, before any other
command: ``incarnation`` is the newest, so a store's user learns of a restart
before it reads anything from the server restarted (serve.tables loads its
tables and counts its log again then).
A connection failure, or a command the server refuses (out of memory, a
read-only replica), raises Unavailable.

A server that may evict keys (a ``maxmemory`` with a ``maxmemory-policy`` other
than ``noeviction``) is refused when the store is opened: it would drop rows and
counted events without a word. With ``noeviction`` a full server refuses writes,
and the store says so.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis

from livelearn.errors import ConfigError, Unavailable
from livelearn.events import is_digits
from livelearn.tables.store import (
    FORMAT,
    Counted,
    Row,
    Snapshot,
    Store,
    Value,
    check_row,
    check_ts,
    url_options,
)

#: KEYS: version sets; ARGV[1]: ts_ms, ARGV[2]: max_versions, ARGV[2 + i]: member of KEYS[i].
#: Times stay strings: Lua numbers would print large ones as 1.7e+12.
_PUT = """
local keep = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, ARGV[1], ARGV[1])
  redis.call('ZADD', key, ARGV[1], ARGV[2 + i])
  redis.call('ZREMRANGEBYRANK', key, 0, -keep - 1)
end
return #KEYS
"""

#: KEYS: version sets; ARGV[1]: max_versions, then per KEYS[i] its number of versions n
#: and n pairs ts_ms, member. Each set is emptied, then holds those versions (the newest
#: max_versions).
_REPLACE = """
local keep = tonumber(ARGV[1])
local at = 2
for i, key in ipairs(KEYS) do
  redis.call('DEL', key)
  local n = tonumber(ARGV[at])
  for j = 1, n do
    redis.call('ZADD', key, ARGV[at + 2 * j - 1], ARGV[at + 2 * j])
  end
  at = at + 1 + 2 * n
  redis.call('ZREMRANGEBYRANK', key, 0, -keep - 1)
end
return #KEYS
"""

#: KEYS: counter sets; ARGV[1]: retention_ms, ARGV[2]: ttl_ms, ARGV[3]: the wall clock's
#: ms, then per KEYS[i] its event's ts_ms and id. Each set keeps the events within
#: retention_ms of its newest or of the wall clock, whichever is earlier.
_ADD = """
local retention, now = tonumber(ARGV[1]), tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'NX', ARGV[2 + 2 * i], ARGV[3 + 2 * i])
  redis.call('PEXPIRE', key, ARGV[2])
  local newest = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
  local floor = math.min(newest, now) - retention
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. string.format('%d', floor))
end
return #KEYS
"""

#: The shortest wall-clock time an idle counter key is kept, whatever the retention.
IDLE_FLOOR_MS = 3_600_000

#: Keys per script call: a call blocks the server, so big batches go in several calls.
CHUNK = 500

_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]+")
T = TypeVar("T")
log = logging.getLogger("livelearn.tables")


class RedisStore(Store):
    """Rows as sorted sets of versions, counters as sorted sets of event ids by time."""

    def __init__(self, client: redis.Redis, namespace: str = "livelearn", max_versions: int = 8,
                 retention_ms: int = 86_400_000):
        super().__init__(max_versions, retention_ms)
        if not _NAMESPACE.fullmatch(namespace):
            raise ConfigError(f"store namespace {namespace!r}: expected letters, digits, _ . -")
        self.client, self.namespace = client, namespace
        conn = client.connection_pool.connection_kwargs
        self.where = (f"redis://{conn.get('host')}:{conn.get('port')}/{conn.get('db', 0)}"
                      f" namespace '{namespace}'")
        #: Wall-clock ms after its last event that a counter key expires.
        self.idle_ms = max(retention_ms, IDLE_FLOOR_MS)
        self.incarnation = ""
        client.connection_pool.connection_kwargs["redis_connect_func"] = self._connected
        self._put = client.register_script(_PUT)
        self._replace = client.register_script(_REPLACE)
        self._add = client.register_script(_ADD)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """Connect (and PING) the server of ``redis://HOST:PORT/DB?options``."""
        options = url_options(url, extra=["namespace"])
        parts = urlsplit(url)
        if parts.path.strip("/") and not is_digits(parts.path.strip("/")):
            raise ConfigError(f"store URL {url!r}: expected redis://HOST:PORT/DB, DB a number")
        try:
            port = parts.port or 6379
        except ValueError:  # urllib's: not a number, or out of range
            raise ConfigError(f"store URL {url!r}: expected redis://HOST:PORT/DB, PORT a "
                              f"number in [0, 65535]") from None
        server = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        client = redis.Redis.from_url(server, socket_connect_timeout=5, socket_timeout=10)
        store = cls(client, **options)  # first: its connections ask the server's run_id
        with _reachable(f"redis://{parts.hostname}:{port}{parts.path}"):
            try:
                client.ping()
            except redis.ResponseError as e:  # a database number the server does not have
                raise ConfigError(f"store URL {url!r}: the server refused it: {e}") from None
            _check_eviction(client, f"redis://{parts.hostname}:{port}")
        return store

    def _connected(self, conn: Any) -> None:
        """redis-py's hook on each new connection: set ``incarnation`` to the server's
        run_id (a WARNING where it changed: the server restarted). A server that refuses
        INFO is used with a WARNING: its restarts go unnoticed."""
        conn.on_connect()
        conn.send_command("INFO", "server")
        try:
            info = conn.read_response()
        except redis.ResponseError as e:
            if not self.incarnation.startswith("?"):
                log.warning("store %s: Redis refused INFO (%s): a restart that loses rows "
                            "or counted events (restored from an older snapshot) goes "
                            "unnoticed", self.where, e)
            self.incarnation = "?"
            return
        found = re.search(rb"^run_id:(\w+)", info if isinstance(info, bytes) else
                          str(info).encode(), re.MULTILINE)
        run_id = found.group(1).decode() if found else "?"
        if self.incarnation and run_id != self.incarnation:
            log.warning("store %s: Redis restarted (run_id %s, was %s): what it holds may be "
                        "older than what it was given", self.where, run_id, self.incarnation)
        self.incarnation = run_id

    def _name(self, kind: str, group: str, key: str) -> str:
        return f"{self.namespace}:{kind}:{len(group)}:{group}:{key}"

    def put_rows(self, table: str, rows: Mapping[str, Mapping[str, Value]], ts_ms: int) -> None:
        check_ts(f"table '{table}'", ts_ms)
        checked = [(self._name("r", table, key), _member(ts_ms, check_row(table, key, row)))
                   for key, row in rows.items()]
        with _reachable(self.where), self.client.pipeline(transaction=True) as pipe:
            for chunk in _chunks(checked):
                self._put(keys=[name for name, _ in chunk],
                          args=[ts_ms, self.max_versions, *[m for _, m in chunk]], client=pipe)
            pipe.execute()

    def replace_table(self, table: str,
                      versions: Mapping[str, Mapping[int, Mapping[str, Value]]]) -> None:
        writes = [(self._name("r", table, key),
                   [_member(check_ts(f"table '{table}'", ts), check_row(table, key, row))
                    for ts, row in rows.items()], list(rows))
                  for key, rows in versions.items()]
        kept = {name for name, _, _ in writes}
        pattern = _glob(self._name("r", table, ""))
        with _reachable(self.where), self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self._name("g", table, ""))
                    stale = [n for n in pipe.scan_iter(match=f"{pattern}*", count=1000)
                             if n.decode() not in kept]
                    pipe.multi()
                    for chunk in _chunks(stale):
                        pipe.delete(*chunk)
                    for write in _chunks(writes):
                        args: list[Any] = [self.max_versions]
                        for _, members, times in write:
                            args.append(len(members))
                            for ts, member in zip(times, members, strict=True):
                                args += (ts, member)
                        self._replace(keys=[name for name, _, _ in write], args=args,
                                      client=pipe)
                    pipe.incr(self._name("g", table, ""))
                    pipe.execute()
                    return
                except redis.WatchError:  # another replace of the table: list its keys again
                    continue

    def get_rows(self, table: str, keys: Iterable[str], as_of_ms: int | None = None
                 ) -> dict[str, Row]:
        keys = list(keys)
        newest = "+inf" if as_of_ms is None else as_of_ms
        with _reachable(self.where), self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrevrangebyscore(self._name("r", table, key), newest, "-inf", start=0, num=1)
            found = pipe.execute()
        return {key: orjson.loads(hit[0])[1] for key, hit in zip(keys, found, strict=True) if hit}

    def add_many(self, counter: str, events: Iterable[Counted]) -> None:
        batch = [(self._name("c", counter, key), ts_ms, event_id)
                 for key, ts_ms, event_id in self.checked(counter, events)]
        now_ms = int(time.time() * 1000)
        with _reachable(self.where), self.client.pipeline(transaction=True) as pipe:
            for chunk in _chunks(batch):
                args: list[int | str] = [self.retention_ms, self.idle_ms, now_ms]
                for _, ts_ms, event_id in chunk:
                    args += (ts_ms, event_id)
                self._add(keys=[name for name, _, _ in chunk], args=args, client=pipe)
            pipe.execute()

    def counts(self, counter: str, keys: Iterable[str], window_ms: int, as_of_ms: int
               ) -> dict[str, int]:
        keys = list(keys)
        first, last = self.window(counter, window_ms, as_of_ms)
        with _reachable(self.where), self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zcount(self._name("c", counter, key), first, last)
            found = pipe.execute()
        return dict(zip(keys, found, strict=True))

    def snapshot(self) -> Snapshot:
        names = [name for name in self._names() if _split(name)[0] in ("r", "c")]
        with _reachable(self.where), self.client.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.zrange(name, 0, -1, withscores=_split(name)[0] == "c")
            found = pipe.execute()
        rows: dict[str, dict[str, list[Any]]] = {}
        counters: dict[str, dict[str, list[list[Any]]]] = {}
        for name, value in zip(names, found, strict=True):
            kind, group, key = _split(name)
            if kind == "r":
                rows.setdefault(group, {})[key] = [orjson.loads(m) for m in value]
            elif value:
                counters.setdefault(group, {})[key] = [[int(ts), i.decode()] for i, ts in value]
        return {"format": FORMAT, "rows": rows, "counters": counters}

    def restore(self, snapshot: Snapshot) -> None:
        self.check_snapshot(snapshot)
        stale = self._names()
        ttl_ms = self.idle_ms
        with _reachable(self.where), self.client.pipeline(transaction=True) as pipe:
            if stale:
                pipe.delete(*stale)
            for table, keys in snapshot["rows"].items():
                for key, versions in keys.items():
                    for ts_ms, row in versions:
                        member = _member(ts_ms, check_row(table, key, row))
                        self._put(keys=[self._name("r", table, key)],
                                  args=[ts_ms, self.max_versions, member], client=pipe)
            for counter, keys in snapshot["counters"].items():
                for key, events in keys.items():
                    for ts_ms, event_id in events:
                        pipe.zadd(self._name("c", counter, key), {event_id: ts_ms})
                    if events:
                        pipe.pexpire(self._name("c", counter, key), ttl_ms)
            pipe.execute()

    def _names(self) -> list[str]:
        """Every key of this namespace, decoded."""
        with _reachable(self.where):
            return [n.decode() for n in self.client.scan_iter(match=f"{self.namespace}:*",
                                                              count=1000)]

    def close(self) -> None:
        self.client.close()


def _member(ts_ms: int, row: Row) -> bytes:
    """The member of a row's version in its sorted set: JSON ``[ts_ms, row]``, in bytes of
    its own length (orjson's are in a buffer of 4 KB or more: a table of a million rows,
    whose members wait together for their transaction, took 4 GB)."""
    return bytes(memoryview(orjson.dumps([ts_ms, row])))


def _chunks(items: list[T]) -> Iterator[list[T]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def _glob(text: str) -> str:
    """``text`` as a SCAN MATCH pattern that matches itself only (* ? [ ] \\ escaped)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _split(name: str) -> tuple[str, str, str]:
    """(kind, table or counter, key) of a Redis key built by ``RedisStore._name``."""
    _, kind, rest = name.split(":", 2)
    length, rest = rest.split(":", 1)
    return kind, rest[:int(length)], rest[int(length) + 1:]


def _check_eviction(client: redis.Redis, where: str) -> None:
    """ConfigError if the server may evict keys: a ``maxmemory`` and a policy other than
    ``noeviction``. Where CONFIG is disabled (some hosted Redis), a warning."""
    try:
        config = client.config_get("maxmemory*")
    except redis.ResponseError as e:
        log.warning("store %s: cannot read Redis's maxmemory-policy (%s): make sure it is "
                    "noeviction, or the server may drop rows and counted events", where, e)
        return
    policy, limit = config.get("maxmemory-policy", "noeviction"), int(config.get("maxmemory") or 0)
    if limit and policy != "noeviction":
        raise ConfigError(f"store {where}: Redis may evict keys (maxmemory {limit} bytes, "
                          f"maxmemory-policy {policy}): it would drop rows and counted events "
                          f"without a word. Set `CONFIG SET maxmemory-policy noeviction` (a "
                          f"full server then refuses writes, and livelearn says so) or "
                          f"`CONFIG SET maxmemory 0`")


@contextmanager
def _reachable(where: str) -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise Unavailable(f"store {where}: Redis is unreachable: {e}") from None
    except redis.OutOfMemoryError:
        raise Unavailable(f"store {where}: Redis is full (its used memory is over its "
                          f"maxmemory) and refused the write (none of it is written): give it "
                          f"more memory (CONFIG SET maxmemory) and try again") from None
    except redis.ReadOnlyError:
        raise Unavailable(f"store {where}: Redis refused the write: the server is a "
                          f"read-only replica; give livelearn the primary's address") from None
