"""Why every prediction's forward pass runs on one thread (docs/speed.md, "One forward thread").

    python benchmarks/forward_thread.py [--rounds 5] [--calls 60] [--threads 2]

The served PyTorch model (v1, EfficientNet-Lite0) classifies the real clothing photo, one call at
a time, from a worker thread, in two setups interleaved round by round (so machine noise hits
both alike), each in a fresh interpreter:

  - alone: the worker thread is the only thread that has ever run PyTorch (what the service's
    forward thread gives, with loads and explanations on threads that end);
  - beside an idle team: another thread ran one forward pass earlier and is still alive, idle
    (a request thread that once explained a photo, the thread that loaded the model).

It prints the median milliseconds per call of each round and of all rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from photos import PHOTO, REPO_ROOT  # a script's own folder is on sys.path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=60, help="timed calls per setup and round")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads (CLASSIFR_NUM_THREADS)")
    parser.add_argument("--child", choices=["alone", "beside"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    return parser.parse_args()


def child(setup: str, model: str, calls: int, threads: int) -> None:
    """One setup in this fresh interpreter; prints the median ms per call as JSON."""
    import torch
    from PIL import Image

    from classifr.inference.classifier import Classifier

    torch.set_num_threads(threads)
    image = Image.open(PHOTO).convert("RGB")
    loaded: dict = {}
    idle = threading.Event()

    def load_and_wait() -> None:
        loaded["model"] = Classifier.load(model, version="v1")
        loaded["model"].predict([image])
        idle.wait()  # alive, its OpenMP team with it

    if setup == "beside":
        threading.Thread(target=load_and_wait, daemon=True).start()
        while "model" not in loaded:
            time.sleep(0.05)
        time.sleep(1.0)

    def measure() -> None:
        classifier = loaded.get("model") or Classifier.load(model, version="v1")
        for _ in range(10):
            classifier.predict([image])
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            classifier.predict([image])
            times.append((time.perf_counter() - started) * 1000)
        loaded["median"] = statistics.median(times)

    worker = threading.Thread(target=measure)
    worker.start()
    worker.join()
    idle.set()
    print(json.dumps({"median_ms": loaded["median"]}))


def main() -> None:
    args = parse_args()
    if args.child:
        child(args.child, args.model, args.calls, args.threads)
        return
    from classifr.app.bootstrap import write_default_version

    with tempfile.TemporaryDirectory(prefix="classifr-forward-thread-") as work:
        model = Path(work) / "v1"
        write_default_version(model)
        results: dict[str, list[float]] = {"alone": [], "beside": []}
        for round_number in range(1, args.rounds + 1):
            for setup in results:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", setup, "--model", str(model), "--calls", str(args.calls),
                     "--threads", str(args.threads)],
                    cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                )
                results[setup].append(json.loads(out.stdout.strip().splitlines()[-1])["median_ms"])
            print(f"round {round_number}: alone {results['alone'][-1]:.1f} ms, "
                  f"beside an idle team {results['beside'][-1]:.1f} ms", flush=True)
    alone, beside = statistics.median(results["alone"]), statistics.median(results["beside"])
    print(f"median over {args.rounds} rounds ({args.calls} calls each, {args.threads} PyTorch threads): "
          f"alone {alone:.1f} ms, beside an idle team {beside:.1f} ms ({beside / alone:.2f}x)")


if __name__ == "__main__":
    main()
