"""Memory per request: what one request, and 8 at once, add to the process, and what stays held.

    python benchmarks/memory.py [--png-side N] [--method gradcam] [--cases predict-png,...]

Each case runs in a fresh process on the real default model (v1, built once in a temporary home),
after a warm-up (a prediction and an explanation of a small photo, so the explainer's model copy
and lazy imports are part of the baseline). Columns: RSS added at the peak (VmHWM, reset through
/proc/self/clear_refs before the case) and RSS still added once the prediction log is written and
a second has passed ("held after"), each beside its target (docs/speed.md, "Memory per request").

Inputs: the largest square 1-bit PNG the decoded-bytes limit accepts (the worst case per byte of
file: 1 bit per pixel in the file, a 1-byte and a 4-byte buffer once decoded), a 48-megapixel phone
JPEG (8000x6000), and the 10950x10950 1-bit PNG that the limit refuses (14 KB of file).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from photos import PHOTO  # a script's own folder is on sys.path

MB = 1024 * 1024
PEAK_TARGET_MB = 300  # one accepted request
BURST_TARGET_MB = 1536  # 8 worst-case requests at once
HELD_TARGET_MB = 50  # "returns to baseline": within this much of it
BURST = 8
DISPLAY_SIDE = 1024  # what the Classify tab asks for (classifr/ui/classify.py)

CASES = {
    # name: (input, what, how many at once)
    "predict-png": ("png", "predict", 1),
    "predict-jpeg": ("jpeg", "predict", 1),
    "explain-png": ("png", "explain", 1),
    "explain-jpeg": ("jpeg", "explain", 1),
    "predict-png-x8": ("png", "predict", BURST),
    "explain-png-x8": ("png", "explain", BURST),
    "refused-png": ("refused", "predict", 1),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--png-side", type=int, default=None, help="side of the 1-bit PNG (default: the largest accepted)")
    parser.add_argument("--method", default="gradcam", help="explanation method (gradcam, ig, occlusion)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: run one case in this process
    parser.add_argument("--work", help=argparse.SUPPRESS)
    return parser.parse_args()


def _status_mb(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1)) / 1024


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux, own process)


def largest_accepted_side(max_decoded_bytes: int) -> int:
    from classifr.core.images import decoded_bytes

    side = int((max_decoded_bytes / 5) ** 0.5) + 2
    while decoded_bytes("1", (side, side)) > max_decoded_bytes:
        side -= 1
    return side


def make_inputs(work: Path, png_side: int) -> dict[str, Path]:
    paths = {"png": work / f"bilevel-{png_side}.png", "refused": work / "bilevel-10950.png", "jpeg": work / "phone-48mp.jpg"}
    Image.new("1", (png_side, png_side)).save(paths["png"], optimize=True)
    Image.new("1", (10950, 10950)).save(paths["refused"], optimize=True)
    with Image.open(PHOTO) as photo:
        photo.convert("RGB").resize((8000, 6000), Image.Resampling.BICUBIC).save(paths["jpeg"], quality=92)
    return paths


def run_case(name: str, work: Path, method: str) -> dict[str, float]:
    """In a fresh process: warm up, then one case; RSS added at the peak and after, in MB."""
    from classifr.app.project import open_service
    from classifr.core.config import Settings
    from classifr.core.memory import return_large_buffers_to_the_system

    return_large_buffers_to_the_system()  # as app.py does first thing (classifr.core.memory)
    what, action, copies = CASES[name][0], CASES[name][1], CASES[name][2]
    source = Path(json.loads((work / "inputs.json").read_text())[what])
    service = open_service(Settings.from_env({**os.environ, "CLASSIFR_HOME": str(work / "home")}))
    service.predict(PHOTO)
    service.explain(PHOTO, method=method, max_side=DISPLAY_SIDE)
    service.flush_prediction_log()
    gc.collect()
    time.sleep(0.5)

    def request() -> None:
        try:
            if action == "predict":
                service.predict(source)
            else:
                service.explain(source, method=method, max_side=DISPLAY_SIDE)
        except ValueError:  # the refused input: InvalidImageError is a ValueError
            pass

    baseline = _status_mb("VmRSS")
    _reset_peak()
    threads = [threading.Thread(target=request) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    service.flush_prediction_log()
    peak = _status_mb("VmHWM") - baseline
    gc.collect()
    time.sleep(1.0)
    after = _status_mb("VmRSS") - baseline
    service.close()
    return {"baseline": baseline, "peak": peak, "after": after}


def main() -> None:
    args = parse_args()
    if args.run:
        print(json.dumps(run_case(args.run, Path(args.work), args.method)))
        return
    from classifr.app.project import open_service
    from classifr.core.config import Settings

    work = Path(tempfile.mkdtemp(prefix="classifr-bench-memory-"))
    settings = Settings.from_env({**os.environ, "CLASSIFR_HOME": str(work / "home")})
    open_service(settings).close()  # builds v1 once; each case then loads it
    png_side = args.png_side or largest_accepted_side(settings.max_decoded_bytes)
    inputs = make_inputs(work, png_side)
    (work / "inputs.json").write_text(json.dumps({k: str(v) for k, v in inputs.items()}))
    print(f"default model, {args.method} explanations at {DISPLAY_SIDE} px; decoded-bytes limit "
          f"{settings.max_decoded_bytes / MB:g} MB; 1-bit PNG {png_side}x{png_side} ({inputs['png'].stat().st_size:,} bytes), "
          f"JPEG 8000x6000 ({inputs['jpeg'].stat().st_size / MB:.1f} MB), refused PNG 10950x10950 "
          f"({inputs['refused'].stat().st_size:,} bytes); MB of RSS over the baseline")
    print(f"{'case':<16} {'baseline':>9} {'peak added':>11} {'target':>7} {'held after':>11} {'target':>7}")
    for name in args.cases.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--run", name, "--work", str(work), "--method", args.method],
            check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()[-1]
        row = json.loads(out)
        target = BURST_TARGET_MB if CASES[name][2] > 1 else PEAK_TARGET_MB
        print(f"{name:<16} {row['baseline']:>9.0f} {row['peak']:>11.0f} {'<= ' + str(target):>7} "
              f"{row['after']:>11.0f} {'<= ' + str(HELD_TARGET_MB):>7}", flush=True)


if __name__ == "__main__":
    main()
