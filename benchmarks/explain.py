"""Explanation speed of the default model on a 12-megapixel photo, beside a plain prediction.

    python benchmarks/explain.py [--repeats 5]

For each method: the whole service call (decode for the model, attribution, full-size decode
and overlay rendering at 4000x3000), the attribution alone, and writing the overlay as PNG
(compression level 1, as the CLI writes it). A prediction on the same photo is the baseline row.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

from photos import make_12mp_jpeg  # a script's own folder is on sys.path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    return parser.parse_args()


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    args = parse_args()
    from classifr.core.config import Settings
    from classifr.inference.classifier import configure_runtime
    from classifr.app.project import open_service

    configure_runtime(args.threads)
    work = Path(tempfile.mkdtemp(prefix="classifr-bench-explain-"))
    service = open_service(Settings.from_env({"CLASSIFR_HOME": str(work / "home")}))
    big = make_12mp_jpeg(work)

    def timed(run) -> tuple[float, object]:
        started = time.perf_counter()
        value = run()
        return time.perf_counter() - started, value

    service.predict(big)
    predict = [timed(lambda: service.predict(big))[0] for _ in range(args.repeats)]
    print(f"default model {service.serving_version}, 12 MP JPEG 4000x3000, {args.threads} threads, median of {args.repeats}")
    print(f"{'method':<12} {'total ms':>9} {'attribution ms':>15} {'PNG write ms':>13}  settings")
    print(f"{'(predict)':<12} {median_ms(predict):>9.0f} {'':>15} {'':>13}  top-5, the baseline")
    for method in ("gradcam", "gradcam++", "ig", "occlusion"):
        service.explain(big, method=method)  # warm-up
        totals, attributions, writes = [], [], []
        for _ in range(args.repeats):
            seconds, result = timed(lambda m=method: service.explain(big, method=m))
            totals.append(seconds)
            attributions.append(result.explanation.seconds)
            writes.append(timed(lambda r=result: r.picture.save(io.BytesIO(), format="PNG", compress_level=1))[0])
        print(
            f"{method:<12} {median_ms(totals):>9.0f} {median_ms(attributions):>15.0f} {median_ms(writes):>13.0f}"
            f"  {result.explanation.settings}, overlay {result.picture.size[0]}x{result.picture.size[1]}"
        )


if __name__ == "__main__":
    main()
