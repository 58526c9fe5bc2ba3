"""How fast the full strategy trains on this machine: images/s of a training step (docs/speed.md,
"Full fine-tuning").

    python benchmarks/train_step.py [--rounds 3] [--steps 6] [--threads 2]

EfficientNet-Lite0 (the embedded v1 backbone) with a 10-label head, batches of 32 real
clothing-small photos preprocessed as served, AdamW, BatchNorm statistics frozen (as
training/full.py trains). Setups, interleaved round by round so machine noise hits all alike:

  - every layer: the whole backbone trains (the recipe before the frozen bottom);
  - bottom frozen: the lowest 40% of the depth groups frozen (`FullConfig.frozen_depth`, the default);
  - bottom frozen, bf16: the same under CPU bf16 autocast (`--mixed-precision`-style; off by default);
  - loader, N workers: `train_full` end to end on the same photos (decode, augmentation, the served
    preprocessing, the step), with N DataLoader workers.

It prints the median images/s of each setup per round and over all rounds.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

from photos import REPO_ROOT  # noqa: F401  (a script's own folder is on sys.path; puts the repo on it too)

CLOTHING = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "clothing-small" / "train"
BATCH = 32


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per setup and round (after one warm-up)")
    parser.add_argument("--loader-steps", type=int, default=20,
                        help="steps of each loader setup (its window includes starting the workers)")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def photos() -> list[tuple[Path, int]]:
    labels = sorted(p.name for p in CLOTHING.iterdir())
    return [(path, i) for i, label in enumerate(labels) for path in sorted((CLOTHING / label).glob("*.jpg"))[:2 * BATCH]]


def step_setup(model, batch, labels, *, frozen_depth: float, bf16: bool):
    from training.full import FullConfig, _freeze_batchnorm, _param_groups

    model = copy.deepcopy(model).to(memory_format=torch.channels_last).requires_grad_(True)
    optimizer = torch.optim.AdamW(_param_groups(model, FullConfig(frozen_depth=frozen_depth)))
    model.train()
    _freeze_batchnorm(model)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(pixel_values=batch).logits
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def images_per_second(step, steps: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return BATCH / statistics.median(times)


def loader_rate(model, preprocess, rows, *, workers: int, steps: int) -> float:
    from training.full import FullConfig, train_full

    config = FullConfig(epochs=1, batch_size=BATCH, max_steps=steps, num_workers=workers)
    result = train_full(model, preprocess, rows, rows[:BATCH], config=config, progress=False)
    return result.history[0]["images_per_second"]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    import tempfile

    from classifr.core.images import read_image
    from classifr.core.labels import LabelSet
    from classifr.inference.backbones import load_backbone
    from training.versions import with_head

    rows = photos()
    with tempfile.TemporaryDirectory() as cache:
        lite0 = load_backbone("lite0", Path(cache))  # built offline, with its own preprocessing
    model = with_head(lite0.model, LabelSet(tuple(f"label{i}" for i in range(10))), torch.zeros(10, 1280), torch.zeros(10))
    preprocess = lite0.preprocess
    chosen = rows[:: max(len(rows) // BATCH, 1)][:BATCH]
    batch = preprocess([read_image(path).image for path, _ in chosen]).contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([label for _, label in chosen])
    setups = {
        "every layer": lambda: images_per_second(step_setup(model, batch, labels, frozen_depth=0.0, bf16=False), args.steps),
        "bottom frozen (default)": lambda: images_per_second(
            step_setup(model, batch, labels, frozen_depth=0.4, bf16=False), args.steps),
        "bottom frozen, bf16": lambda: images_per_second(step_setup(model, batch, labels, frozen_depth=0.4, bf16=True), args.steps),
        "loader, 0 workers": lambda: loader_rate(model, preprocess, rows, workers=0, steps=args.loader_steps),
        "loader, 2 workers": lambda: loader_rate(model, preprocess, rows, workers=2, steps=args.loader_steps),
    }
    results: dict[str, list[float]] = {name: [] for name in setups}
    for round_ in range(1, args.rounds + 1):
        for name, measure in setups.items():
            results[name].append(measure())
        print(f"round {round_}: " + ", ".join(f"{name} {values[-1]:.1f}" for name, values in results.items()), flush=True)
    baseline = statistics.median(results["every layer"])
    print(f"\n{'setup':28s} images/s   x every layer   ({args.threads} threads, batch {BATCH})")
    for name, values in results.items():
        rate = statistics.median(values)
        print(f"{name:28s} {rate:8.1f}   {rate / baseline:6.2f}x")


if __name__ == "__main__":
    main()
