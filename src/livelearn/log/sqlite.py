"""The embedded Log: one SQLite file in WAL mode, shared by threads and processes.

Appends take SQLite's write lock (BEGIN IMMEDIATE), so offsets stay dense and
ordered when several processes append to one topic. ``atomic()`` makes the
appends and the commit inside it one transaction: exactly-once for free.

Several processes share the file: one writes at a time, and readers do not wait for
writers (WAL). A statement waits at most ``LOCK_WAIT_S`` for a lock that another process
holds (a writer stopped with Ctrl-Z, another program's open transaction), then raises
Unavailable naming the file: a live role waits for the log and goes on from its
checkpoints (outage.py), a bounded command (ingest, models, --until-idle) stops saying so.
The registry's index.db waits as long.

Records are stored in batches, as Kafka does: one table row holds up to
``BATCH_RECORDS`` consecutive records of a partition (offsets ``first`` to
``last``; their keys as a JSON list, their values concatenated, the values'
lengths as a JSON list), because SQLite spends about 2 us on a row whatever
its size. A read from an offset inside a batch skips the records before it.
A file written by an earlier version (one row per record, table ``records``)
is converted when opened.

Retention (``sqlite:///log.db?retention_hours=N``; by default every record is
kept): the batches appended more than N hours ago are deleted, at most every
minute (a tenth of the retention if that is shorter) as records are appended,
except each partition's newest, which holds where it ends. SQLite reuses the
freed pages, so the file stays about as large as N hours of records. A read
from below where a partition now starts raises Lost, as on Kafka: a reader that
stopped longer than the retention stops rather than skip records. A file from
before retention existed gets its batches' append time set to when it is
first opened.

The last records this process appended to each partition with their values
``decoded`` stay in memory once committed, and a read of those offsets in this
process gets them from there, parsed: the trainer of ``livelearn run`` takes
the samples its joiner just wrote without reading and parsing them again.
Every record is read with its batch's append time (Record.appended_ms), from
memory as from the file.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import accumulate
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl

import orjson

from livelearn.errors import ConfigError, Corrupt, NotFound, Unavailable, make_folder
from livelearn.log.base import (
    Appended,
    Checkpoint,
    Log,
    Record,
    TopicPartition,
    checksum,
    claimant,
    fenced,
    lost,
    sound,
    split,
)

log = logging.getLogger("livelearn.log")

#: Records per row of the batches table at most.
BATCH_RECORDS = 1000
#: Seconds between two deletions of batches older than the retention, at most.
SWEEP_S = 60.0
#: Bytes per page of a new file. Batches of records span many pages; with 16 KiB
#: pages a replay writes its records in 30% less time than with SQLite's 4 KiB
#: (fewer pages to chain and checkpoint), and a small commit (a served
#: prediction) still writes little.
PAGE_SIZE = 16384
#: What SQLite says when the disk refuses a write: full, read-only, failing.
CANNOT_WRITE = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN")
#: Seconds a statement waits for a lock another process holds on the file (SQLite's busy
#: timeout; a write waits for the one writer at a time) before it raises Unavailable.
LOCK_WAIT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS topic_ids (name TEXT PRIMARY KEY, id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, last INTEGER NOT NULL,
    first INTEGER NOT NULL, keys BLOB NOT NULL, sizes BLOB NOT NULL, vals BLOB NOT NULL,
    appended REAL NOT NULL, PRIMARY KEY (topic, partition, last));
CREATE TABLE IF NOT EXISTS checkpoints (
    grp TEXT NOT NULL, slot INTEGER NOT NULL, offsets BLOB NOT NULL, state BLOB,
    sha256 TEXT NOT NULL, PRIMARY KEY (grp, slot));
CREATE TABLE IF NOT EXISTS claims (grp TEXT PRIMARY KEY, epoch INTEGER NOT NULL,
    owner TEXT NOT NULL);
"""


class Connection(sqlite3.Connection):
    """A connection whose damaged file (a page overwritten, a file cut short) raises
    Corrupt naming the file, not sqlite3's bare DatabaseError, whether a statement
    or the reading of its rows meets the damage. Used by the registry too."""

    def cursor(self, factory: Any = None) -> Any:  # type: ignore[override]
        return super().cursor(factory or _Cursor)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        return self.cursor().executemany(sql, parameters)


class _Cursor(sqlite3.Cursor):
    def execute(self, sql: str, parameters: Any = (), /) -> Self:
        try:
            return super().execute(sql, parameters)
        except sqlite3.DatabaseError as e:
            raise _failure(self.connection, e) from None

    def executemany(self, sql: str, parameters: Any, /) -> Self:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.DatabaseError as e:
            raise _failure(self.connection, e) from None

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.DatabaseError as e:
            raise _failure(self.connection, e) from None

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.DatabaseError as e:
            raise _failure(self.connection, e) from None

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.DatabaseError as e:
            raise _failure(self.connection, e) from None


def read_only_folder(file: str | Path) -> str:
    """Where the folder of SQLite file ``file`` cannot be written, a sentence saying so
    (SQLite cannot open the file without making ``file``-wal and ``file``-shm there); else
    ''."""
    folder = Path(file).parent
    if not folder.is_dir() or os.access(folder, os.W_OK):
        return ""
    name = Path(file).name
    return (f": its folder {str(folder)!r} cannot be written, and SQLite makes {name}-wal and "
            f"{name}-shm beside it, even to read it. Give a folder that can be written (or "
            f"copy the pipeline's folder to one).")


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection to SQLite file ``path`` as the log and the registry use it: each
    statement its own transaction unless one is begun, usable by any thread, waiting
    LOCK_WAIT_S at most for another process's lock."""
    return sqlite3.connect(path, timeout=LOCK_WAIT_S, isolation_level=None,
                           check_same_thread=False, factory=Connection)


def take_claim(conn: sqlite3.Connection, group: str) -> int:
    """Claim ``group`` in ``conn``'s claims table, inside a write transaction: the new
    epoch, one above the last claimant's."""
    row = conn.execute("SELECT epoch FROM claims WHERE grp = ?", (group,)).fetchone()
    epoch = 1 if row is None else int(row[0]) + 1
    conn.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (group, epoch, claimant()))
    return epoch


def check_claim(conn: sqlite3.Connection, group: str, epoch: int, where: str) -> None:
    """Fenced if another process claimed ``group`` after the claim of ``epoch``."""
    row = conn.execute("SELECT epoch, owner FROM claims WHERE grp = ?", (group,)).fetchone()
    if row is not None and int(row[0]) != epoch:
        raise fenced(group, where, row[1])


def _failure(conn: sqlite3.Connection, e: sqlite3.DatabaseError) -> Exception:
    """Corrupt for a damaged file; Unavailable for a file another process kept locked for
    LOCK_WAIT_S; other errors (a constraint, a disk full) as they are."""
    busy = (getattr(e, "sqlite_errorname", None) or "").startswith("SQLITE_BUSY")
    if type(e) is not sqlite3.DatabaseError and not busy:
        return e
    try:
        path = sqlite3.Connection.execute(conn, "PRAGMA database_list").fetchone()[2]
    except sqlite3.Error:
        path = "?"
    if busy:
        return Unavailable(f"SQLite file {path} stayed locked by another process for "
                           f"{LOCK_WAIT_S:g} s, the longest livelearn waits ({e}): is a "
                           f"command writing to it stopped (Ctrl-Z), or another program "
                           f"holding a transaction open? Once it lets go, try again")
    return Corrupt(f"SQLite file {path} is damaged ({e}): restore it from a backup, or start "
                   f"a new one (a log can be replayed from the events' files)")


class SQLiteLog(Log):
    """A Log in one SQLite file. Each thread gets its own connection."""

    def __init__(self, path: str | Path, retention_hours: float | None = None):
        """``retention_hours``: delete the records appended longer ago (module docstring);
        None keeps every record."""
        if retention_hours is not None and not (
                math.isfinite(retention_hours) and retention_hours > 0):
            raise ConfigError(f"log {str(path)!r}: retention_hours must be a number > 0, got "
                              f"{retention_hours!r}")
        self.path = str(path)
        self.retention_hours = retention_hours
        self._swept_at = -math.inf  # time.monotonic() of the last deletion of old batches
        make_folder(Path(self.path).parent, "log folder")
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._partitions: dict[str, int] = {}
        # per partition, the last records appended here with their values decoded
        self._recent: dict[TopicPartition, Appended] = {}
        self._claims: dict[str, int] = {}  # group -> epoch of this process's claim
        try:
            self._conn().executescript(_SCHEMA)
        except (sqlite3.DatabaseError, Corrupt) as e:  # a folder, a file of another kind
            why = e.__context__ if isinstance(e, Corrupt) else e  # sqlite3's own words
            raise ConfigError(f"log {self.path!r}: cannot open it as SQLite ({why})"
                              f"{read_only_folder(self.path)}") from None
        self._convert_records()
        self._add_append_times()

    @classmethod
    def from_url(cls, url: str) -> SQLiteLog:
        """The log of ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``
        (SQLAlchemy's rule: the path follows the third slash), with an optional
        ``?retention_hours=N``.

        >>> SQLiteLog.from_url("sqlite:///") # doctest: +ELLIPSIS
        Traceback (most recent call last):
        livelearn.errors.ConfigError: log URL 'sqlite:///': expected sqlite:///relative/...
        """
        path, query = file_of(url), url.partition("?")[2]
        if not path:
            raise ConfigError(f"log URL {url!r}: expected sqlite:///relative/path.db or "
                              f"sqlite:////absolute/path.db")
        options = dict(parse_qsl(query, keep_blank_values=True))
        unknown = set(options) - {"retention_hours"}
        if unknown:
            raise ConfigError(f"log URL {url!r}: unknown option(s) {', '.join(sorted(unknown))};"
                              f" expected retention_hours")
        hours = options.get("retention_hours")
        try:
            return cls(path, None if hours is None else float(hours))
        except ValueError:
            raise ConfigError(f"log URL {url!r}: retention_hours must be a number > 0, got "
                              f"{hours!r}") from None

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # a new file only
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            self._local.depth = 0
            self._local.appended = []
        return conn

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One write transaction. Threads of this process take turns on a lock first:
        SQLite's own busy wait starves some writers under load (p99 x2 in a server)."""
        conn = self._conn()
        if self._local.depth:
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                self._local.depth = 1
                try:
                    yield
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # SQLite rolls back by itself after some errors
                        conn.execute("ROLLBACK")
                    raise
                self._recent.update(self._local.appended)  # readable once committed
            except sqlite3.OperationalError as e:
                if not (e.sqlite_errorname or "").startswith(CANNOT_WRITE):
                    raise
                why = read_only_folder(self.path) or ": is its disk full, or the file read-only?"
                raise Unavailable(f"log {self.path!r}: SQLite cannot write to it ({e}){why} "
                                  f"Nothing of this write was written") from None
            finally:
                self._local.depth = 0
                self._local.appended = []

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        if partitions < 1:
            raise ConfigError(f"topic '{topic}': partitions must be >= 1, got {partitions}")
        with self.atomic():
            self._conn().execute("INSERT OR IGNORE INTO topics VALUES (?, ?)",
                                 (topic, partitions))
        self.same_partitions(topic, partitions)
        self.topic_id(topic)

    def topic_id(self, topic: str) -> str:
        """The topic's id, given when it is created (or first asked, for a topic of a file
        from before ids): a copy of the file holds the same records, and the same ids."""
        self.partitions(topic)
        with self.atomic():
            conn = self._conn()
            conn.execute("INSERT OR IGNORE INTO topic_ids VALUES (?, ?)",
                         (topic, uuid.uuid4().hex))
            return str(conn.execute("SELECT id FROM topic_ids WHERE name = ?",
                                    (topic,)).fetchone()[0])

    def partitions(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            row = self._conn().execute("SELECT partitions FROM topics WHERE name = ?",
                                       (topic,)).fetchone()
            if row is None:
                raise NotFound(f"topic '{topic}' does not exist in {self.path}")
            n = self._partitions[topic] = int(row[0])
        return n

    def append(self, topic: str, records: Iterable[tuple[str, bytes]],
               decoded: Sequence[Any] | None = None) -> int:
        by_partition = split(records, self.partitions(topic), decoded)
        if not by_partition:
            return 0
        conn = self._conn()
        with self.atomic():
            now = time.time()
            for partition, (items, values) in by_partition.items():
                start = self._end_offset(conn, topic, partition)
                conn.executemany("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
                    _batch(topic, partition, start + i, items[i:i + BATCH_RECORDS], now)
                    for i in range(0, len(items), BATCH_RECORDS)])
                if values is not None:
                    self._local.appended.append(((topic, partition),
                                                 Appended(start, items, values, _ms(now))))
            if self.retention_hours is not None:
                self._delete_old(conn, now)
        return sum(len(items) for items, _ in by_partition.values())

    def _delete_old(self, conn: sqlite3.Connection, now: float) -> None:
        """Delete the batches appended more than the retention before ``now``, but each
        partition's newest; at most every SWEEP_S (a tenth of the retention if shorter)."""
        assert self.retention_hours is not None
        retention_s = self.retention_hours * 3600
        if time.monotonic() - self._swept_at < min(SWEEP_S, retention_s / 10):
            return
        self._swept_at = time.monotonic()
        deleted = conn.execute(
            "DELETE FROM batches WHERE appended < ? AND last < (SELECT MAX(newest.last) FROM "
            "batches AS newest WHERE newest.topic = batches.topic AND newest.partition = "
            "batches.partition)", (now - retention_s,)).rowcount
        if deleted:
            log.debug("%s: deleted %d batches of records older than %g hours", self.path,
                      deleted, self.retention_hours)

    def read(self, topic: str, partition: int, offset: int, max_records: int = 1000
             ) -> list[Record]:
        out: list[Record] = []
        if max_records <= 0:
            return out
        recent = self._recent.get((topic, partition))
        if recent is not None and recent.holds(offset):
            return recent.records(topic, partition, offset, max_records)
        rows = self._conn().execute(
            "SELECT first, keys, sizes, vals, appended FROM batches WHERE topic = ? AND "
            "partition = ? AND last >= ? ORDER BY last", (topic, partition, offset))
        for first, keys, sizes, vals, appended in rows:
            if first > offset and not out:  # offsets are dense: the records before, deleted
                hours = self.retention_hours
                raise lost(f"log {self.path!r}", topic, partition, offset, first,
                           "the log's retention " + (f"(retention_hours={hours:g})" if hours
                                                     else "(of a process appending to it)"))
            lengths = orjson.loads(sizes)
            skip = max(0, offset - first)
            take = min(len(lengths), skip + max_records - len(out))
            cuts = list(accumulate(lengths[skip:take], initial=sum(lengths[:skip])))
            at = _ms(appended)
            out += [Record(topic, partition, i, key, vals[start:end], None, at)
                    for i, key, start, end
                    in zip(range(first + skip, first + take), orjson.loads(keys)[skip:take],
                           cuts[:-1], cuts[1:], strict=True)]
            if len(out) >= max_records:
                break
        return out

    def end_offset(self, topic: str, partition: int) -> int:
        self.partitions(topic)
        return self._end_offset(self._conn(), topic, partition)

    def start_offset(self, topic: str, partition: int) -> int:
        self.partitions(topic)
        row = self._conn().execute("SELECT first FROM batches WHERE topic = ? AND partition = ? "
                                   "ORDER BY last LIMIT 1", (topic, partition)).fetchone()
        return 0 if row is None else int(row[0])

    def offset_since(self, topic: str, partition: int, appended_ms: int) -> int:
        self.partitions(topic)
        conn = self._conn()
        row = conn.execute("SELECT MIN(first) FROM batches WHERE appended >= ? AND topic = ? "
                           "AND partition = ?", (appended_ms / 1000, topic, partition)).fetchone()
        return self._end_offset(conn, topic, partition) if row[0] is None else int(row[0])

    @staticmethod
    def _end_offset(conn: sqlite3.Connection, topic: str, partition: int) -> int:
        row = conn.execute("SELECT MAX(last) FROM batches WHERE topic = ? AND partition = ?",
                           (topic, partition)).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def commit(self, group: str, checkpoint: Checkpoint) -> None:
        """Keep the new checkpoint in slot 0 and the one before it in slot 1; Fenced if
        another process claimed the group after this one."""
        offsets = orjson.dumps([[t, p, o] for (t, p), o in sorted(checkpoint.offsets.items())])
        digest = checksum(offsets, checkpoint.state)
        with self.atomic():
            conn = self._conn()
            if group in self._claims:
                check_claim(conn, group, self._claims[group], f"log {self.path!r}")
            conn.execute("DELETE FROM checkpoints WHERE grp = ? AND slot = 1", (group,))
            conn.execute("UPDATE checkpoints SET slot = 1 WHERE grp = ? AND slot = 0", (group,))
            conn.execute("INSERT INTO checkpoints VALUES (?, 0, ?, ?, ?)",
                         (group, offsets, checkpoint.state, digest))

    def claim(self, group: str) -> Checkpoint:
        with self.atomic():
            self._claims[group] = take_claim(self._conn(), group)
        return self.committed(group)

    def committed(self, group: str) -> Checkpoint:
        rows = self._conn().execute("SELECT offsets, state, sha256 FROM checkpoints "
                                    "WHERE grp = ? ORDER BY slot", (group,)).fetchall()
        for i, (offsets, state, digest) in enumerate(rows):
            if sound(offsets, state, digest):
                if i:
                    self.fell_back(group, self.path)
                return Checkpoint({(t, p): o for t, p, o in orjson.loads(offsets)}, state)
        if rows:
            raise Corrupt(f"every checkpoint of group '{group}' in {self.path} is corrupt")
        return Checkpoint()

    def _convert_records(self) -> None:
        """Move the records of a file of an earlier version (one row each) into batches."""
        conn = self._conn()
        old = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'"
        if conn.execute(old).fetchone() is None:
            return
        with self.atomic():
            if conn.execute(old).fetchone() is None:  # another process did it meanwhile
                return
            rows = conn.execute("SELECT topic, partition, offset, key, value FROM records "
                                "ORDER BY topic, partition, offset").fetchall()
            conn.executemany("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
                _batch(t, p, o, [(k, v)], time.time())
                for t, p, o, k, v in rows])
            conn.execute("DROP TABLE records")
        log.info("converted %d records of %s to batches", len(rows), self.path)

    def _add_append_times(self) -> None:
        """Give the batches of a file from before retention their append time (now), and
        index the times: the deletion of old batches finds them without reading the
        records (the column comes after them in a row)."""
        conn = self._conn()
        columns = "SELECT name FROM pragma_table_info('batches') WHERE name = 'appended'"
        index = "SELECT 1 FROM sqlite_master WHERE name = 'batches_appended'"
        if conn.execute(columns).fetchone() is not None and conn.execute(index).fetchone():
            return
        with self.atomic():
            if conn.execute(columns).fetchone() is None:  # not done by another process
                conn.execute(f"ALTER TABLE batches ADD COLUMN appended REAL NOT NULL "
                             f"DEFAULT {time.time()!r}")
            conn.execute("CREATE INDEX IF NOT EXISTS batches_appended ON batches (appended)")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def file_of(url: str) -> str:
    """The file a ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` URL names
    ('' for none).

    >>> file_of("sqlite:///ll/log.db?retention_hours=2"), file_of("sqlite:////var/log.db")
    ('ll/log.db', '/var/log.db')
    """
    path = url.removeprefix("sqlite://").partition("?")[0]
    return path[1:] if path.startswith("/") else path


def _ms(appended: float) -> int:
    """A batch's append time (s since the epoch, as stored) in integer ms, as each of its
    records gives it (Record.appended_ms), whether read from the file or from memory."""
    return int(appended * 1000)


def _batch(topic: str, partition: int, first: int, items: list[tuple[str, bytes]],
           appended: float) -> tuple[str, int, int, int, bytes, bytes, bytes, float]:
    """The row of the batches table that holds ``items`` from offset ``first`` on,
    appended at ``appended`` (s since the epoch)."""
    keys = [k for k, _ in items]
    values = [v for _, v in items]
    return (topic, partition, first + len(items) - 1, first, orjson.dumps(keys),
            orjson.dumps([len(v) for v in values]), b"".join(values), appended)
