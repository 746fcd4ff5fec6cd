"""A Store in Redis (``redis://HOST:PORT/DB?namespace=NAME``), shared by many processes.

Layout, every key under ``NAME:`` (default ``livelearn``); a name is prefixed
with its length so table, counter and key names may hold any character:

- ``NAME:r:<len>:<table>:<key>`` a sorted set of versions: score = ts_ms,
  member = JSON ``[ts_ms, row]``; the newest ``max_versions`` are kept.
- ``NAME:c:<len>:<counter>:<key>`` a hash {bucket: count}. A Lua script adds
  to a bucket and, once the hash holds twice ``keep_buckets``, drops all but
  the newest ``keep_buckets``. The hash expires when no increment came for
  ``retention_ms + bucket_ms`` (at least one hour) of wall-clock time.

Each batch is one round trip; writes run in MULTI/EXEC, so a reader sees all of
a batch or none. Durability is the Redis server's (RDB / AOF as configured).
A connection failure raises Unavailable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis

from livelearn.errors import ConfigError, Unavailable
from livelearn.tables.store import Row, Snapshot, Store, Value, check_row, check_ts, url_options

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

#: KEYS: counter hashes; ARGV[1]: keep_buckets, ARGV[2]: ttl_ms, then per KEYS[i] its bucket
#: and increment. A hash holding more than twice keep_buckets keeps its keep_buckets newest.
_INCR = """
local keep = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, ARGV[1 + 2 * i], ARGV[2 + 2 * i])
  redis.call('PEXPIRE', key, ARGV[2])
  if redis.call('HLEN', key) > 2 * keep then
    local fields = redis.call('HKEYS', key)
    local newest = tonumber(fields[1])
    for _, f in ipairs(fields) do newest = math.max(newest, tonumber(f)) end
    for _, f in ipairs(fields) do
      if tonumber(f) < newest - keep + 1 then redis.call('HDEL', key, f) end
    end
  end
end
return #KEYS
"""

#: KEYS: counter hashes; ARGV[1], ARGV[2]: first and last bucket (inclusive). Per key, the
#: sum of its buckets in that range: it reads the whole hash when that is the smaller.
_COUNT = """
local first, last = tonumber(ARGV[1]), tonumber(ARGV[2])
local window = {}
for b = first, last do window[#window + 1] = string.format('%d', b) end
local out = {}
for i, key in ipairs(KEYS) do
  local total = 0
  if #window > 4000 or redis.call('HLEN', key) < #window then
    local flat = redis.call('HGETALL', key)
    for j = 1, #flat, 2 do
      local b = tonumber(flat[j])
      if b >= first and b <= last then total = total + tonumber(flat[j + 1]) end
    end
  else
    for _, n in ipairs(redis.call('HMGET', key, unpack(window))) do
      if n then total = total + tonumber(n) end
    end
  end
  out[i] = total
end
return out
"""

#: The shortest wall-clock time an idle counter key is kept, whatever the retention.
IDLE_FLOOR_MS = 3_600_000

#: Keys per script call: a call blocks the server, so big batches go in several calls.
CHUNK = 500

_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]+")
T = TypeVar("T")


class RedisStore(Store):
    """Rows as sorted sets of versions, counters as hashes of time buckets."""

    def __init__(self, client: redis.Redis, namespace: str = "livelearn", max_versions: int = 8,
                 bucket_ms: int = 60_000, retention_ms: int = 86_400_000):
        super().__init__(max_versions, bucket_ms, retention_ms)
        if not _NAMESPACE.fullmatch(namespace):
            raise ConfigError(f"store namespace {namespace!r}: expected letters, digits, _ . -")
        self.client, self.namespace = client, namespace
        conn = client.connection_pool.connection_kwargs
        self.where = (f"redis://{conn.get('host')}:{conn.get('port')}/{conn.get('db', 0)}"
                      f" namespace '{namespace}'")
        #: Wall-clock ms after its last increment that a counter key expires.
        self.idle_ms = max(retention_ms + bucket_ms, IDLE_FLOOR_MS)
        self._put = client.register_script(_PUT)
        self._incr = client.register_script(_INCR)
        self._count = client.register_script(_COUNT)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """Connect (and PING) the server of ``redis://HOST:PORT/DB?options``."""
        options = url_options(url, extra=["namespace"])
        parts = urlsplit(url)
        server = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        client = redis.Redis.from_url(server, socket_connect_timeout=5, socket_timeout=10)
        with _reachable(f"redis://{parts.hostname}:{parts.port or 6379}{parts.path}"):
            client.ping()
        return cls(client, **options)

    def _name(self, kind: str, group: str, key: str) -> str:
        return f"{self.namespace}:{kind}:{len(group)}:{group}:{key}"

    def put_rows(self, table: str, rows: Mapping[str, Mapping[str, Value]], ts_ms: int) -> None:
        check_ts(f"table '{table}'", ts_ms)
        checked = [(self._name("r", table, key), orjson.dumps([ts_ms, check_row(table, key, row)]))
                   for key, row in rows.items()]
        with _reachable(self.where), self.client.pipeline(transaction=True) as pipe:
            for chunk in _chunks(checked):
                self._put(keys=[name for name, _ in chunk],
                          args=[ts_ms, self.max_versions, *[m for _, m in chunk]], client=pipe)
            pipe.execute()

    def get_rows(self, table: str, keys: Iterable[str], as_of_ms: int | None = None
                 ) -> dict[str, Row]:
        keys = list(keys)
        newest = "+inf" if as_of_ms is None else as_of_ms
        with _reachable(self.where), self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrevrangebyscore(self._name("r", table, key), newest, "-inf", start=0, num=1)
            found = pipe.execute()
        return {key: orjson.loads(hit[0])[1] for key, hit in zip(keys, found, strict=True) if hit}

    def incr_many(self, counter: str, increments: Iterable[tuple[str, int, int]]) -> None:
        batch = [(self._name("c", counter, key), bucket, by)
                 for key, bucket, by in self.bucketed(counter, increments)]
        ttl_ms = self.idle_ms
        with _reachable(self.where), self.client.pipeline(transaction=True) as pipe:
            for chunk in _chunks(batch):
                args: list[int] = [self.keep_buckets, ttl_ms]
                for _, bucket, by in chunk:
                    args += (bucket, by)
                self._incr(keys=[name for name, _, _ in chunk], args=args, client=pipe)
            pipe.execute()

    def counts(self, counter: str, keys: Iterable[str], window_ms: int, as_of_ms: int
               ) -> dict[str, int]:
        keys = list(keys)
        window = self.window_buckets(counter, window_ms, as_of_ms)
        names = [self._name("c", counter, key) for key in keys]
        with _reachable(self.where), self.client.pipeline(transaction=False) as pipe:
            for chunk in _chunks(names):
                self._count(keys=chunk, args=[window.start, window.stop - 1], client=pipe)
            found = [n for sums in pipe.execute() for n in sums]
        return dict(zip(keys, found, strict=True))

    def snapshot(self) -> Snapshot:
        names = self._names()
        with _reachable(self.where), self.client.pipeline(transaction=True) as pipe:
            for name in names:
                if _split(name)[0] == "r":
                    pipe.zrange(name, 0, -1)
                else:
                    pipe.hgetall(name)
            found = pipe.execute()
        rows: dict[str, dict[str, list[Any]]] = {}
        counters: dict[str, dict[str, dict[str, int]]] = {}
        for name, value in zip(names, found, strict=True):
            kind, group, key = _split(name)
            if kind == "r":
                rows.setdefault(group, {})[key] = [orjson.loads(m) for m in value]
            elif value:
                counters.setdefault(group, {})[key] = {b.decode(): int(n) for b, n in value.items()}
        return {"format": 1, "bucket_ms": self.bucket_ms, "rows": rows, "counters": counters}

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
                        member = orjson.dumps([ts_ms, check_row(table, key, row)])
                        self._put(keys=[self._name("r", table, key)],
                                  args=[ts_ms, self.max_versions, member], client=pipe)
            for counter, keys in snapshot["counters"].items():
                for key, buckets in keys.items():
                    if buckets:
                        pipe.hset(self._name("c", counter, key), mapping=buckets)
                        pipe.pexpire(self._name("c", counter, key), ttl_ms)
            pipe.execute()

    def _names(self) -> list[str]:
        """Every key of this namespace, decoded."""
        with _reachable(self.where):
            return [n.decode() for n in self.client.scan_iter(match=f"{self.namespace}:*",
                                                              count=1000)]

    def close(self) -> None:
        self.client.close()


def _chunks(items: list[T]) -> Iterator[list[T]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def _split(name: str) -> tuple[str, str, str]:
    """(kind, table or counter, key) of a Redis key built by ``RedisStore._name``."""
    _, kind, rest = name.split(":", 2)
    length, rest = rest.split(":", 1)
    return kind, rest[:int(length)], rest[int(length) + 1:]


@contextmanager
def _reachable(where: str) -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise Unavailable(f"store {where}: Redis is unreachable: {e}") from None
