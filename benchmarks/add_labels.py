"""Adding labels to the ImageNet `v1` when its old labels have no data, with anchors from served traffic.

    python benchmarks/add_labels.py [--traffic 1000] [--per-label 35] [--eval-cifar 2000]

The scenario of docs/retraining.md ("Traffic anchors"), end to end on a fresh project (a temp folder):
  1. serve traffic through ClassifrService: CIFAR-10 train images and clothing-small validation photos
     (every class, hats and shorts included, as real traffic would be); the prediction log keeps their
     embeddings;
  2. add "hat" and "shorts" from clothing-small/train (about 30 training images each after the
     dataset's 15% test split);
  3. train the head strategy from v1 twice in the same run: without traffic anchors (the baseline:
     the project holds no image of an old label, so nothing anchors the old outputs) and with them;
  4. on images that were never anchors (CIFAR-10 test, clothing-small test), report new-label recall
     (clothing test hats and shorts) and churn against v1 (top-1 changes on every other image), with
     the share that moved to a new label.
"""

from __future__ import annotations

import argparse
import io
import random
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from classifr.core.config import Settings
from classifr.data.dataset import Example
from classifr.core.images import read_image
from classifr.inference.classifier import Classifier, configure_runtime
from classifr.app.project import open_service
from classifr.app.service import ClassifrService
from training.train import TrainOptions, run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CLOTHING = SHARED / "clothing-small"
NEW = ("hat", "shorts")
BATCH = 32


def cifar_images(split: str, n: int, seed: int) -> list[Image.Image]:
    table = pq.read_table(SHARED / "cifar10" / f"{split}.parquet", columns=["img"])
    rows = random.Random(seed).sample(range(table.num_rows), n)
    column = table.column("img")
    return [Image.open(io.BytesIO(column[i].as_py()["bytes"])).convert("RGB") for i in rows]


def serve_traffic(service: ClassifrService, images: list) -> float:
    started = time.perf_counter()
    for start in range(0, len(images), BATCH):
        results = service.predict_batch(images[start : start + BATCH], origin="api")
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    service.prediction_log.flush(timeout=120)
    return time.perf_counter() - started


def top1(classifier: Classifier, images: list) -> list[str]:
    labels: list[str] = []
    for start in range(0, len(images), BATCH):
        batch = [read_image(i, min_side=classifier.min_side).image if isinstance(i, Path) else i
                 for i in images[start : start + BATCH]]
        labels += [ranked[0].label for ranked in classifier.predict(batch, top_k=1)]
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traffic", type=int, default=1000, help="images served before training (default 1000)")
    parser.add_argument("--per-label", type=int, default=35, help="photos added per new label (default 35)")
    parser.add_argument("--eval-cifar", type=int, default=2000, help="CIFAR-10 test images to measure churn on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    configure_runtime(2)
    home = Path(tempfile.mkdtemp(prefix="classifr-add-labels-"))
    settings = Settings(home=home, num_threads=2)
    service = open_service(settings)

    clothing_traffic = sorted((CLOTHING / "validation").rglob("*.jpg"))
    n_clothing = min(len(clothing_traffic), args.traffic * 3 // 10)
    traffic = cifar_images("train", args.traffic - n_clothing, args.seed) + clothing_traffic[:n_clothing]
    served_s = serve_traffic(service, traffic)
    for label in NEW:
        photos = sorted((CLOTHING / "train" / label).glob("*.jpg"))[: args.per_label]
        service.dataset.add_many([Example(p, label) for p in photos], source="upload")
    service.close()
    counts = service.dataset.stats(NEW)["by_split"]

    outcomes = {}
    for name, use_traffic in (("without traffic anchors (baseline)", False), ("with traffic anchors", True)):
        started = time.perf_counter()
        outcome = run(settings, TrainOptions(parent="v1", promote="never", progress=False, traffic_anchors=use_traffic))
        outcomes[name] = (outcome, time.perf_counter() - started)

    held_out_cifar = cifar_images("test", args.eval_cifar, args.seed + 1)
    test_photos = sorted((CLOTHING / "test").rglob("*.jpg"))
    truth = ["cifar"] * len(held_out_cifar) + [p.parent.name for p in test_photos]
    images = held_out_cifar + test_photos
    registry = service.registry
    before = top1(Classifier.load(registry.local_path("v1"), version="v1"), images)
    print(f"project: {home}")
    print(f"traffic: {len(traffic)} images served in {served_s:.1f} s ({len(traffic) - n_clothing} CIFAR-10 train, "
          f"{n_clothing} clothing validation); new labels {', '.join(NEW)}: {counts}")
    print(f"held out: {len(held_out_cifar)} CIFAR-10 test + {len(test_photos)} clothing test photos")
    print(f"{'run':38} {'anchors':>8} {'train s':>8} {'recall':>7} {'churn':>6} {'->new':>6} {'old->old':>8}  per label")
    for name, (outcome, seconds) in outcomes.items():
        version = outcome.version
        after = top1(Classifier.load(registry.local_path(version), version=version), images)
        new_cases = [(t, a) for t, a in zip(truth, after) if t in NEW]
        recall = {label: sum(a == label for t, a in new_cases if t == label) / sum(t == label for t, _ in new_cases) for label in NEW}
        others = [(b, a) for t, b, a in zip(truth, before, after) if t not in NEW]
        churn = sum(b != a for b, a in others) / len(others)
        to_new = sum(b != a and a in NEW for b, a in others) / len(others)
        anchors = (outcome_hyper := _hyper(registry, version)).get("project_anchors", 0) + outcome_hyper.get("traffic_anchors", 0)
        overall = sum(a == t for t, a in new_cases) / len(new_cases)
        print(f"{name:38} {anchors:8d} {seconds:8.1f} {overall:7.1%} {churn:6.1%} {to_new:6.1%} {churn - to_new:8.1%}  "
              + ", ".join(f"{k} {v:.1%}" for k, v in recall.items()))


def _hyper(registry, version: str) -> dict:
    import json

    return json.loads((registry.local_path(version) / "metrics.json").read_text()).get("hyperparameters", {})


if __name__ == "__main__":
    main()
