"""Prediction speed of the default model, side by side with its baselines, in one run.

    python benchmarks/predict.py [--repeats 30] [--skip-startup]

Rows (median and p90 over interleaved repeats, so machine noise hits every row alike):
  - forward, plain: the model as transformers loads it on one preprocessed 224 px image (baseline);
  - forward, channels-last: the same weights in the memory layout Classifr serves;
  - Classifr end to end: file bytes -> decode -> preprocess -> forward -> top-5 (service.predict);
  - transformers.pipeline("image-classification") on the same file (the usual way);
for a 12-megapixel JPEG (a real clothing photo upscaled to 4000x3000) and a 400x533 photo.
Then the start-up of `python app.py` until it answers HTTP: cold (empty CLASSIFR_HOME, builds v1)
and warm (v1 already there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from photos import PHOTO, REPO_ROOT, make_12mp_jpeg  # a script's own folder is on sys.path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-startup", action="store_true", help="do not time python app.py")
    return parser.parse_args()


def time_interleaved(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    for run in cases.values():  # warm-up: first calls allocate and fill caches
        run()
        run()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            started = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - started) * 1000)
    return times


def summarize(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def time_startup(home: Path) -> float:
    port = 7900 + os.getpid() % 90
    env = {**os.environ, "CLASSIFR_HOME": str(home), "GRADIO_SERVER_PORT": str(port)}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with {process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    args = parse_args()
    from dataclasses import replace

    from transformers import AutoModelForImageClassification, pipeline

    from classifr.core.config import Settings
    from classifr.inference.classifier import configure_runtime
    from classifr.app.project import open_service

    configure_runtime(args.threads)
    work = Path(tempfile.mkdtemp(prefix="classifr-bench-"))
    settings = replace(Settings.from_env({"CLASSIFR_HOME": str(work / "home")}), num_threads=args.threads)
    service = open_service(settings)
    model_dir = service.registry.local_path("production")
    classifier = service.classifier
    baseline = pipeline("image-classification", model=str(model_dir), device="cpu")
    big = make_12mp_jpeg(work)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {service.serving_version} ({model_dir.name})")
    print(f"{'image':<22} {'path':<34} {'median ms':>10} {'p90 ms':>8} {'x forward':>10}")

    # The baseline (docs/speed.md): the model as transformers loads it, contiguous input. Classifr serves
    # the same weights in channels-last layout; that forward is shown too, so the share of the
    # end-to-end time that is decode + preprocess is visible either way.
    plain_model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    for label, photo in (("12 MP JPEG 4000x3000", big), ("photo 400x533", PHOTO)):
        served_pixels = classifier.preprocess([Image.open(photo).convert("RGB")])
        plain_pixels = served_pixels.contiguous()

        def forward(model, pixels):
            with torch.inference_mode():
                model(pixel_values=pixels)

        cases = {
            "forward, plain (baseline)": lambda p=plain_pixels: forward(plain_model, p),
            "forward, channels-last (served)": lambda p=served_pixels: forward(classifier.model, p),
            "Classifr end to end": lambda photo=photo: service.predict(photo),
            "transformers.pipeline": lambda photo=photo: baseline(str(photo), top_k=5),
        }
        times = time_interleaved(cases, args.repeats)
        floor = summarize(times["forward, plain (baseline)"])[0]
        for name, samples in times.items():
            median, p90 = summarize(samples)
            print(f"{label:<22} {name:<34} {median:>10.1f} {p90:>8.1f} {median / floor:>9.2f}x")
        result = service.predict(photo)
        print(f"{'':<22} -> {result.predictions[0].label} ({result.predictions[0].score:.2f}); "
              f"decode {result.timings_ms['decode']:.1f} ms, preprocess+model {result.timings_ms['model']:.1f} ms")

    if not args.skip_startup:
        cold_home = work / "cold-home"
        cold = time_startup(cold_home)
        warm = time_startup(cold_home)
        print(f"python app.py until it answers HTTP: cold (empty CLASSIFR_HOME) {cold:.1f} s, warm {warm:.1f} s")


if __name__ == "__main__":
    main()
