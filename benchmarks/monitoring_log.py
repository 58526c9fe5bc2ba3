"""What the prediction log costs: on the request thread, in the writer, and per dashboard query.

    python benchmarks/monitoring_log.py [--records 10000] [--rows 100000]

Prints:
  * the cost of `PredictionLog.log()` on the caller's thread per record (median and p99, µs), for
    records with a 1280-dim float32 embedding (stored as float16) and a 20 KB thumbnail, next to a
    plain `queue.put_nowait` of the same record (the baseline: the least any off-thread log costs);
    paced 1 ms apart (the writer keeps up) and in one burst (the writer busy, holding the GIL at times);
  * writer throughput: records per second from the first `log()` until `flush()` returns, next
    to one `executemany` of the same rows into a bare table without indexes (baseline);
  * the dashboard queries on a log of 100,000 rows (the newest 20,000 with embeddings, the newest
    2,000 with thumbnails, 1% with feedback), median of 5 runs in ms, over all rows and a 24 h window.
Everything is written under a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import queue
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from classifr.monitoring.log import PredictionLog  # noqa: E402
from classifr.monitoring.records import LoggedPrediction  # noqa: E402
from classifr.monitoring.schema import INSERT_PREDICTION_SQL  # noqa: E402

EMBEDDING_DIM = 1280  # EfficientNet-Lite0's pooled features
THUMBNAIL_BYTES = 20_000
DAY_S = 86_400.0


def make_records(n: int, rng: np.random.Generator) -> list[LoggedPrediction]:
    thumbnail = b"\xff\xd8" + os.urandom(THUMBNAIL_BYTES - 2)
    start = time.time()
    records = []
    for i in range(n):
        scores = np.sort(rng.dirichlet(np.ones(5)))[::-1]
        records.append(
            LoggedPrediction(
                id=uuid.uuid4().hex, time=start + i * 0.01, version="v1", variant="production", source="ui",
                labels=tuple(f"label{j}" for j in rng.choice(1000, 5, replace=False)),
                scores=tuple(float(s) for s in scores), latency_ms=float(rng.gamma(9, 5)),
                image_sha256=os.urandom(32).hex(), width=4000, height=3000, nbytes=2_400_000,
                embedding=rng.standard_normal(EMBEDDING_DIM).astype(np.float32), thumbnail=thumbnail,
            )
        )  # fmt: skip
    return records


def per_call_us(
    records: list[LoggedPrediction], call: Callable[[LoggedPrediction], None], *, pause_s: float = 0.0
) -> tuple[float, float]:
    """Median and p99 of one call, in µs, each call timed on its own; `pause_s` between calls."""
    costs = []
    for item in records:
        started = time.perf_counter_ns()
        call(item)
        costs.append(time.perf_counter_ns() - started)
        if pause_s:
            time.sleep(pause_s)
    return statistics.median(costs) / 1000, float(np.percentile(costs, 99)) / 1000


def caller_and_writer(records: list[LoggedPrediction], folder: Path) -> list[tuple[str, float, float]]:
    paced_records = make_records(1000, np.random.default_rng(1))
    plain: queue.Queue = queue.Queue()
    baseline = per_call_us(records, plain.put_nowait)
    baseline_paced = per_call_us(paced_records, plain.put_nowait, pause_s=0.001)
    log = PredictionLog(folder / "writer.db", max_queue=len(records) + 1)
    try:
        # Paced like real traffic (the writer keeps up, mostly idle), then a burst (the writer
        # busy all along, competing for the GIL) that also measures the writer's throughput.
        paced = per_call_us(paced_records, log.log, pause_s=0.001)
        log.flush(timeout=600)
        started = time.perf_counter()
        cost = per_call_us(records, log.log)
        if not log.flush(timeout=600):
            raise SystemExit("the writer did not finish")
        elapsed = time.perf_counter() - started
        if log.dropped or log.failed:
            raise SystemExit(f"dropped {log.dropped}, failed {log.failed}")
    finally:
        log.close()
    return [
        (f"queue.put_nowait, burst of {len(records):,} (baseline)", *baseline),
        (f"PredictionLog.log(), burst of {len(records):,}", *cost),
        ("queue.put_nowait, 1,000 paced 1 ms apart (baseline)", *baseline_paced),
        ("PredictionLog.log(), 1,000 paced 1 ms apart", *paced),
        ("__writer", len(records) / elapsed, elapsed),
    ]


def bare_insert_rate(records: list[LoggedPrediction], folder: Path) -> float:
    """One executemany of the same rows into tables without indexes: the floor SQLite sets."""
    conn = sqlite3.connect(folder / "bare.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE p (id, time, version, label, score, latency_ms, sha, embedding)")
    conn.execute("CREATE TABLE i (id, jpeg)")
    started = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO p VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ((r.id, r.time, r.version, r.labels[0], r.scores[0], r.latency_ms, r.image_sha256,
          r.embedding.astype(np.float16).tobytes()) for r in records),
    )  # fmt: skip
    conn.executemany("INSERT INTO i VALUES (?, ?)", ((r.id, r.thumbnail) for r in records))
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(records) / elapsed


def build_large_log(path: Path, n: int, rng: np.random.Generator) -> float:
    """n rows over 30 days and 3 versions, written directly with the log's INSERT statement."""
    PredictionLog(path).close()
    now = time.time()
    times = np.sort(now - rng.random(n) * 30 * DAY_S)
    embedding = rng.standard_normal(EMBEDDING_DIM).astype(np.float16).tobytes()
    thumbnail = b"\xff\xd8" + os.urandom(THUMBNAIL_BYTES - 2)
    scores, latencies = rng.beta(5, 2, n).tolist(), rng.gamma(9, 5, n).tolist()
    with sqlite3.connect(path) as conn:
        conn.executemany(
            INSERT_PREDICTION_SQL,
            ((f"{i:032x}", float(times[i]), f"v{1 + 3 * i // n}", "production", "ui", f"label{i % 200}",
              scores[i], '[["x", 0.5]]', latencies[i], f"{i % 50_000:064x}", 4000, 3000, 2_400_000,
              embedding if i >= n - 20_000 else None, None) for i in range(n)),
        )  # fmt: skip
        conn.executemany(
            "UPDATE predictions SET feedback = ?, true_label = label, feedback_time = time WHERE rowid = ?",
            [("confirmed" if i % 3 else "corrected", i) for i in range(1, n + 1, 100)],
        )
        conn.executemany("INSERT INTO images VALUES (?, ?)", [(f"{i:032x}", thumbnail) for i in range(n - 2000, n)])
    return now


def query_times(log: PredictionLog, now: float) -> list[tuple[str, float]]:
    since = now - DAY_S
    queries: list[tuple[str, Callable[[], object]]] = [
        ("summary (all rows)", lambda: log.summary()),
        ("summary (last 24 h)", lambda: log.summary(since=since)),
        ("volume, 1 h buckets (all rows)", lambda: log.volume(bucket_s=3600)),
        ("volume, 1 h buckets (v3, last 24 h)", lambda: log.volume(bucket_s=3600, version="v3", since=since)),
        ("label_distribution (all rows)", lambda: log.label_distribution()),
        ("label_distribution (last 24 h)", lambda: log.label_distribution(since=since)),
        ("confidence_histogram (all rows)", lambda: log.confidence_histogram()),
        ("confidence_histogram (v3, last 24 h)", lambda: log.confidence_histogram(version="v3", since=since)),
        ("review_queue", lambda: log.review_queue()),
        ("gallery corrected", lambda: log.gallery("corrected")),
        ("embeddings (5,000 newest)", lambda: log.embeddings(limit=5000)),
    ]
    results = []
    for name, call in queries:
        call()  # warm the page cache, as a dashboard refresh would find it
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            call()
            runs.append(time.perf_counter() - started)
        results.append((name, statistics.median(runs) * 1000))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    records = make_records(args.records, rng)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        *calls, (_, rate, elapsed) = caller_and_writer(records, folder)
        bare = bare_insert_rate(records, folder)
        path = folder / "large.db"
        now = build_large_log(path, args.rows, rng)
        size_mb = path.stat().st_size / 1e6
        with PredictionLog(path) as log:
            queries = query_times(log, now)

    print(
        f"{args.records} records, {EMBEDDING_DIM}-dim float32 embedding (stored as float16), "
        f"{THUMBNAIL_BYTES // 1000} KB thumbnail"
    )
    print(f"{'on the caller thread, per record':52} {'median µs':>10} {'p99 µs':>8}")
    for name, median, p99 in calls:
        print(f"{name:52} {median:10.1f} {p99:8.1f}")
    print()
    print(f"{'writer':52} {'records/s':>10}")
    print(f"{'one executemany, bare tables (baseline)':52} {bare:10.0f}")
    print(f"{'log() x N then flush()':52} {rate:10.0f}   ({elapsed:.2f} s)")
    print()
    print(f"{args.rows} rows ({size_mb:.0f} MB file)")
    print(f"{'query':52} {'median ms':>10}")
    for name, ms in queries:
        print(f"{name:52} {ms:10.1f}")


if __name__ == "__main__":
    main()
