"""What the prediction log costs a prediction, side by side with the same service without it.

    python benchmarks/monitoring.py [--repeats 40]

Two ClassifrService instances on the same default model: one with the prediction log off
(the baseline), one with it on and keeping images (the default), timing `service.predict(path)`
(file bytes to top-5, in process) on a 400x533 clothing photo and on a 12-megapixel JPEG:

  - latency: interleaved single requests, the log flushed between them (not timed), so each
    request pays only what logging adds to its own path (the feature probe, validation, enqueue);
  - sustained: blocks of back-to-back requests, alternating off/on, each block timed up to its
    last row written; the writer thread (image hash, JPEG copy, SQLite) then competes for the
    same 2 cores, so this is the cost under load.

Finally, the log's own numbers: rows written, nothing dropped.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from photos import PHOTO, make_12mp_jpeg  # a script's own folder is on sys.path

from classifr.core.config import Settings
from classifr.inference.classifier import configure_runtime
from classifr.app.project import open_service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    configure_runtime(2)
    with tempfile.TemporaryDirectory(prefix="classifr-monitoring-bench-") as tmp:
        folder = Path(tmp)
        big = make_12mp_jpeg(folder)
        base = Settings(home=folder / "home", num_threads=2)
        without = open_service(replace(base, prediction_log=False))
        with_log = open_service(base)
        log = with_log.prediction_log
        print(f"{'image':18} {'':10} {'log off ms':>11} {'log on ms':>10} {'overhead':>9}")
        for name, path in (("400x533 photo", PHOTO), ("12-megapixel JPEG", big)):
            for service in (without, with_log):  # warm-up
                service.predict(path)
            latency = {"off": [], "on": []}
            for _ in range(args.repeats):
                for key, service in (("off", without), ("on", with_log)):
                    log.flush(timeout=60)
                    started = time.perf_counter()
                    service.predict(path)
                    latency[key].append((time.perf_counter() - started) * 1000)
            sustained = {"off": [], "on": []}
            for _ in range(4):
                for key, service in (("off", without), ("on", with_log)):
                    log.flush(timeout=60)
                    started = time.perf_counter()
                    for _ in range(args.repeats // 4):
                        service.predict(path)
                    log.flush(timeout=60)
                    sustained[key].append((time.perf_counter() - started) * 1000 / (args.repeats // 4))
            for kind, times in (("latency", latency), ("sustained", sustained)):
                off, on = statistics.median(times["off"]), statistics.median(times["on"])
                print(f"{name:18} {kind:10} {off:11.1f} {on:10.1f} {(on - off) / off:9.1%}")
        started = time.perf_counter()
        log.flush(timeout=60)
        print(f"log: {log.count()} rows, flushed the rest in {(time.perf_counter() - started) * 1000:.0f} ms, "
              f"dropped {log.dropped}, failed {log.failed}")
        with_log.close()
        without.close()


if __name__ == "__main__":
    main()
