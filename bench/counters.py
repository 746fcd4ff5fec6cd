"""Windowed counters on a hot key: the cost of an event as the key holds more.

A key that many events share (a popular item's clicks in the last hour) holds
every event of its window. The joiner's counter (features.counters.WindowCounter)
counts, then adds, each event; the server's memory store (tables.memory) adds
events in batches. Each event also expires one at the back of the window.

    python bench/counters.py --json counters.json

For each size (events a key holds in its window), the µs an event costs, and
``x_smallest``: that cost over the cost at the smallest size, in the same run.
Near 1 at every size: an event costs the same however many the key holds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from livelearn.features.counters import WindowCounter
from livelearn.tables.memory import MemoryStore

SIZES = (1_000, 10_000, 100_000, 1_000_000)
EVENTS = 20_000  # timed, after the key is filled; one a millisecond
BATCH = 100  # events a store's add_many takes


def counter_us(size: int) -> float:
    counter = WindowCounter(window_ms=size)
    for ts in range(size):
        counter.add("hot", ts)
    started = time.perf_counter()
    for ts in range(size, size + EVENTS):
        counter.count("hot", ts)
        counter.add("hot", ts)
    return (time.perf_counter() - started) / EVENTS * 1e6


def store_us(size: int) -> float:
    store = MemoryStore(retention_ms=size)
    store.add_many("clicks", [("hot", ts, f"e{ts}") for ts in range(size)])
    batches = [[("hot", ts, f"e{ts}") for ts in range(first, first + BATCH)]
               for first in range(size, size + EVENTS, BATCH)]
    started = time.perf_counter()
    for batch in batches:
        store.add_many("clicks", batch)
    return (time.perf_counter() - started) / EVENTS * 1e6


def run(sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    rows = [{"size": size, "counter_us": round(counter_us(size), 3),
             "store_us": round(store_us(size), 3)} for size in sizes]
    for row in rows:
        row["counter_x_smallest"] = round(row["counter_us"] / rows[0]["counter_us"], 2)
        row["store_x_smallest"] = round(row["store_us"] / rows[0]["store_us"], 2)
    return {"events_timed": EVENTS, "sizes": rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=None, metavar="PATH")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), metavar="N,N,...",
                   help="events a key holds in its window, smallest first (default: %(default)s)")
    args = p.parse_args()
    result = run(tuple(int(size) for size in args.sizes.split(",")))
    print(f"{'events in window':>16} {'counter µs':>10} {'x':>5} {'store µs':>9} {'x':>5}")
    for r in result["sizes"]:
        print(f"{r['size']:>16,} {r['counter_us']:>10.2f} {r['counter_x_smallest']:>5.2f} "
              f"{r['store_us']:>9.2f} {r['store_x_smallest']:>5.2f}")
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
