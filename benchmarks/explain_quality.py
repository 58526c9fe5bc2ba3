"""How faithful each explanation method is, beside two baselines any method must beat, in one run.

    python benchmarks/explain_quality.py [--photos 100] [--seed 0] [--sanity 20]

The real default model v1 explains its top-1 class on a fixed sample of real clothing photos
(../shared/datasets/clothing-small/test, sorted, taken in turn from each label), with every method
(Grad-CAM, GradCAM++, Integrated Gradients, Occlusion) and two baseline maps: uniform noise (seeded
by --seed) and a Gaussian blob centred in the input. Every map is scored by
classifr.inference.faithfulness.measure (docs/explanations.md). Rows, one per method and baseline:
  - deletion AUC: the class probability as the pixels the map ranks highest are replaced by a
    blur of the photo first, area under the curve; lower is better;
  - insertion AUC: the probability as those pixels are revealed first on the blur; higher is better;
  - beats random / beats blob: the share of photos whose deletion (del) or insertion (ins) AUC is
    better than that baseline's on the same photo;
  - sanity rho: the Spearman rank correlation between the map and the map once the model's top
    layers are re-initialised, mean over the first --sanity photos; a map that reads the model
    changes, so lower is better ("-" for the baselines, which ignore the model);
  - infidelity: Captum's infidelity of the map (16 noisy copies; lower is better), mean over the
    same first --sanity photos;
  - 12 MP ms: ClassifrService.explain on a 12-megapixel JPEG (decode, attribution, overlay at full
    size), median of --repeats; attribution ms: the attribution alone on the sample photos, median.
Then the time of measure() for one map (median and p90 over every map scored) and one line per
method saying whether it beats each baseline on both AUCs. Progress lines estimate the time left;
Integrated Gradients and Occlusion are the slow methods. --photos 10 is the smoke test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from photos import make_12mp_jpeg  # a script's own folder is on sys.path
from serving import CLOTHING_TEST

METHODS = ("gradcam", "gradcam++", "ig", "occlusion")
BASELINE_MAPS = ("random map", "centred blob")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=100, help="clothing photos to explain (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-map baseline")
    parser.add_argument(
        "--sanity", type=int, default=None, help="photos for the sanity check and infidelity (default: a fifth)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed 12 MP explanations per method")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if args.photos < 1:
        parser.error(f"--photos must be at least 1, got {args.photos}")
    if args.sanity is None:
        args.sanity = max(1, args.photos // 5)
    args.sanity = min(args.sanity, args.photos)
    return args


@dataclass
class Scores:
    """One method's (or baseline's) numbers over the photos, in photo order."""

    deletion: list[float] = field(default_factory=list)
    insertion: list[float] = field(default_factory=list)
    attribution_seconds: list[float] = field(default_factory=list)
    sanity: list[float] = field(default_factory=list)
    infidelity: list[float] = field(default_factory=list)


def sample_photos(count: int) -> list[Path]:
    """`count` test photos, sorted within each label and taken from the labels in turn."""
    queues = [sorted(folder.glob("*.jpg")) for folder in sorted(CLOTHING_TEST.iterdir()) if folder.is_dir()]
    chosen: list[Path] = []
    for position in range(max(len(queue) for queue in queues)):
        chosen += [queue[position] for queue in queues if position < len(queue)]
    if len(chosen) < count:
        raise SystemExit(f"--photos {count}: only {len(chosen)} photos in {CLOTHING_TEST}")
    return chosen[:count]


def centred_blob(height: int, width: int) -> np.ndarray:
    """A Gaussian centred in the input, a quarter of the shorter side wide: the 'object in the middle' guess."""
    sigma = min(height, width) / 4
    rows = np.arange(height)[:, None] - (height - 1) / 2
    cols = np.arange(width)[None, :] - (width - 1) / 2
    return np.exp(-(rows**2 + cols**2) / (2 * sigma**2)).astype(np.float32)


def random_map(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.random((height, width), dtype=np.float32)


def share(wins: list[bool]) -> str:
    return f"{100 * sum(wins) / len(wins):.0f}%"


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.0f}" if samples else "-"


def decode(path: Path, classifier):
    """The same decode as ClassifrService.explain: a JPEG draft no smaller than the model needs."""
    from classifr.core.images import read_image
    from classifr.inference.explain import model_sized

    return model_sized(read_image(path, min_side=classifier.min_side).image, classifier.min_side)


@dataclass(frozen=True)
class Scored:
    """One photo as scored: its top-1 label, model input and every map, kept for the subset checks."""

    path: Path
    target: str
    target_index: int
    pixels: torch.Tensor
    maps: dict[str, np.ndarray]


def score_photos(explainer, photos: list[Path], seed: int, keep: int) -> tuple[dict[str, Scores], list[Scored], list[float]]:
    """Explain and score every photo with every method and baseline: the scores, the first `keep`
    photos as scored, and the seconds of each measure() call."""
    from classifr.inference.faithfulness import measure

    classifier = explainer.classifier
    rng = np.random.default_rng(seed)
    scores = {name: Scores() for name in (*METHODS, *BASELINE_MAPS)}
    kept: list[Scored] = []
    measure_seconds: list[float] = []
    started = time.perf_counter()
    for number, path in enumerate(photos, 1):
        image = decode(path, classifier)
        pixels = classifier.preprocess([image]).contiguous()
        height, width = pixels.shape[-2:]
        maps: dict[str, np.ndarray] = {}
        for method in METHODS:
            explanation = explainer.explain(image, method=method)  # the top-1 class, the same for every method
            scores[method].attribution_seconds.append(explanation.seconds)
            maps[method] = explanation.heatmap
        maps["random map"] = random_map(rng, height, width)
        maps["centred blob"] = centred_blob(height, width)
        for name, heatmap in maps.items():
            result = measure(explainer, pixels, heatmap, explanation.target_index)
            scores[name].deletion.append(result.deletion_auc)
            scores[name].insertion.append(result.insertion_auc)
            measure_seconds.append(result.seconds)
        if number <= keep:
            kept.append(Scored(path, explanation.target, explanation.target_index, pixels, maps))
        print_progress("scored photo", number, len(photos), f"{path.parent.name}/{path.name[:12]}", started)
    return scores, kept, measure_seconds


def subset_checks(explainer, kept: list[Scored], scores: dict[str, Scores]) -> None:
    """On the kept photos: each method's rank correlation with its map on a model whose top layers
    are re-initialised, and Captum's infidelity of every map (the baselines' too)."""
    from classifr.inference.faithfulness import captum_infidelity, randomized_rank_correlation

    started = time.perf_counter()
    for number, photo in enumerate(kept, 1):
        image = decode(photo.path, explainer.classifier)
        for method in METHODS:
            scores[method].sanity.append(randomized_rank_correlation(explainer, image, method, photo.target))
        for name, heatmap in photo.maps.items():
            scores[name].infidelity.append(captum_infidelity(explainer, photo.pixels, heatmap, photo.target_index))
        print_progress("subset checks", number, len(kept), f"{photo.path.parent.name}/{photo.path.name[:12]}", started)


def print_progress(step: str, number: int, total: int, what: str, started: float) -> None:
    elapsed = time.perf_counter() - started
    left = elapsed / number * (total - number)
    print(f"{step} {number}/{total} {what}: {elapsed / 60:.1f} min so far, about {left / 60:.1f} min left", flush=True)


def time_12mp(service, big: Path, repeats: int) -> dict[str, list[float]]:
    """ClassifrService.explain on a 12 MP JPEG per method, as benchmarks/explain.py times it."""
    seconds: dict[str, list[float]] = {}
    for method in METHODS:
        service.explain(big, method=method)  # warm-up
        seconds[method] = []
        for _ in range(repeats):
            started = time.perf_counter()
            service.explain(big, method=method)
            seconds[method].append(time.perf_counter() - started)
    return seconds


def print_report(scores: dict[str, Scores], latency: dict[str, list[float]], measure_seconds: list[float]) -> None:
    random, blob = scores["random map"], scores["centred blob"]
    print()
    print(
        f"{'method':<13} {'deletion AUC':>12} {'insertion AUC':>13} {'beats random del/ins':>21} "
        f"{'beats blob del/ins':>19} {'sanity rho':>10} {'infidelity':>10} {'12 MP ms':>9} {'attribution ms':>15}"
    )
    for name, row in scores.items():
        beats_random = beats_blob = "-"
        if name not in BASELINE_MAPS:
            beats_random = f"{share(wins_deletion(row, random))}/{share(wins_insertion(row, random))}"
            beats_blob = f"{share(wins_deletion(row, blob))}/{share(wins_insertion(row, blob))}"
        sanity = f"{statistics.mean(row.sanity):.2f}" if row.sanity else "-"
        infidelity = f"{statistics.mean(row.infidelity):.3g}" if row.infidelity else "-"
        print(
            f"{name:<13} {statistics.mean(row.deletion):>12.3f} {statistics.mean(row.insertion):>13.3f} "
            f"{beats_random:>21} {beats_blob:>19} {sanity:>10} {infidelity:>10} "
            f"{median_ms(latency.get(name, [])):>9} {median_ms(row.attribution_seconds):>15}"
        )
    ordered = sorted(measure_seconds)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    print(f"\nmeasure() for one map: median {median_ms(ordered)} ms, p90 {p90 * 1000:.0f} ms over {len(ordered)} maps")
    print("A method beats a baseline when its mean deletion AUC is lower and its mean insertion AUC higher:")
    for method in METHODS:
        print(f"  {method}: " + "; ".join(verdict(scores[method], scores[base], base) for base in BASELINE_MAPS))


def wins_deletion(row: Scores, baseline: Scores) -> list[bool]:
    return [mine < theirs for mine, theirs in zip(row.deletion, baseline.deletion)]


def wins_insertion(row: Scores, baseline: Scores) -> list[bool]:
    return [mine > theirs for mine, theirs in zip(row.insertion, baseline.insertion)]


def verdict(row: Scores, baseline: Scores, name: str) -> str:
    """'beats the random map', or which AUC it loses on, with both means."""
    deletion, insertion = statistics.mean(row.deletion), statistics.mean(row.insertion)
    base_deletion, base_insertion = statistics.mean(baseline.deletion), statistics.mean(baseline.insertion)
    lost = []
    if deletion >= base_deletion:
        lost.append(f"deletion {deletion:.3f} vs {base_deletion:.3f}")
    if insertion <= base_insertion:
        lost.append(f"insertion {insertion:.3f} vs {base_insertion:.3f}")
    return f"beats the {name}" if not lost else f"does NOT beat the {name} ({', '.join(lost)})"


def main() -> None:
    args = parse_args()
    from classifr.app.bootstrap import write_default_version
    from classifr.app.project import open_service
    from classifr.core.config import Settings
    from classifr.inference.classifier import Classifier, configure_runtime
    from classifr.inference.explain import Explainer

    configure_runtime(args.threads)
    photos = sample_photos(args.photos)
    with tempfile.TemporaryDirectory(prefix="classifr-bench-explain-quality-") as temporary:
        work = Path(temporary)
        folder = work / "v1"
        write_default_version(folder)
        explainer = Explainer(Classifier.load(folder, version="v1"))
        print(
            f"default model v1, {len(photos)} clothing photos, top-1 class, sanity check and infidelity on the first "
            f"{args.sanity}, seed {args.seed}, {args.threads} threads",
            flush=True,
        )
        torch.manual_seed(args.seed)  # Captum infidelity's noise
        scores, kept, measure_seconds = score_photos(explainer, photos, args.seed, args.sanity)
        subset_checks(explainer, kept, scores)
        print(f"timing {', '.join(METHODS)} on a 12 MP JPEG, median of {args.repeats} ...", flush=True)
        env = {"CLASSIFR_HOME": str(work / "home"), "CLASSIFR_MODEL": str(folder), "CLASSIFR_PREDICTION_LOG": "0"}
        latency = time_12mp(open_service(Settings.from_env(env)), make_12mp_jpeg(work), args.repeats)
    print_report(scores, latency, measure_seconds)


if __name__ == "__main__":
    main()
