"""The `classifr` command (also `python -m classifr`).

Every command takes `--json` for machine-readable output (shapes in docs/cli.md). Exit status: 0 on
success, 1 when the work failed (an unreadable image, an unknown version), 2 for bad usage; errors
are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from classifr.core.config import Settings
from classifr.core.errors import ClassifrError
from classifr.core.storage import storage_error

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="classifr", description="Classify images and teach the model.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="start the web app (same as python app.py)")
    serve.add_argument("--port", type=int, help="port (default $GRADIO_SERVER_PORT or 7860)")
    serve.add_argument("--host", help="address to bind (default $GRADIO_SERVER_NAME or 127.0.0.1)")

    predict = commands.add_parser("predict", help="classify image files")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--top-k", type=int, default=None, help="labels per image (default 5)")
    predict.add_argument("--json", action="store_true", help="print JSON")

    explain = commands.add_parser("explain", help="show why the model decided, as a picture")
    explain.add_argument("image", metavar="IMAGE")
    explain.add_argument("--method", choices=["gradcam", "gradcam++", "ig", "occlusion", "layers"], default="gradcam")
    explain.add_argument("--target", metavar="LABEL", help="label to explain (default: the top prediction)")
    explain.add_argument("--out", required=True, metavar="FILE", help="PNG (or JPEG/WebP) to write")
    explain.add_argument("--view", choices=["overlay", "side-by-side", "heatmap"], default="overlay")
    explain.add_argument("--steps", type=int, default=32, help="Integrated Gradients steps (default 32)")
    explain.add_argument("--baseline", choices=["black", "blur", "mean"], default="black", help="Integrated Gradients baseline")
    explain.add_argument("--json", action="store_true", help="print JSON")

    dataset = commands.add_parser("dataset", help="the project dataset: add, import, stats")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    add = dataset_commands.add_parser("add", help="add images of one category (created if new)")
    add.add_argument("images", nargs="+", metavar="IMAGE")
    add.add_argument("--label", required=True, metavar="NAME", help="the category of these images")
    add.add_argument("--contributor", metavar="NAME", help="who gives them (default: anonymous)")
    add.add_argument("--json", action="store_true", help="print JSON")
    imports = dataset_commands.add_parser("import", help="import an imagefolder, Parquet files or a Hub dataset")
    imports.add_argument("source", metavar="SOURCE", help="a folder, Parquet file(s) or folder of them, or a Hub id owner/name")
    imports.add_argument("--image-column", metavar="NAME", help="default: the Image feature, or a column named image")
    imports.add_argument("--label-column", metavar="NAME", help="default: the ClassLabel feature, or a column named label")
    imports.add_argument("--split", metavar="NAME", help="import only this split of the source (default: all)")
    imports.add_argument("--limit", type=int, metavar="N", help="import at most N images")
    imports.add_argument("--contributor", metavar="NAME", help="credited in every row (default: anonymous)")
    imports.add_argument("--quiet", action="store_true", help="no progress bar")
    imports.add_argument("--json", action="store_true", help="print JSON")
    stats = dataset_commands.add_parser("stats", help="counts per label, source and split")
    stats.add_argument("--json", action="store_true", help="print JSON")

    train = commands.add_parser(
        "train", help="train a new model version (classifr train --help)", add_help=False,
        description="Runs python -m training.train with the same arguments.",
    )
    train.add_argument("arguments", nargs=argparse.REMAINDER)
    evaluate = commands.add_parser(
        "evaluate", help="evaluate a version on the held-out test split (classifr evaluate --help)", add_help=False,
        description="Runs python -m training.evaluation with the same arguments.",
    )
    evaluate.add_argument("arguments", nargs=argparse.REMAINDER)
    benchmark = commands.add_parser(
        "benchmark", help="compare backbones, strategies and baselines, with a report (classifr benchmark --help)",
        add_help=False, description="Runs python -m study.run with the same arguments.",
    )
    benchmark.add_argument("arguments", nargs=argparse.REMAINDER)

    versions = commands.add_parser("versions", help="list model versions; versions import: a checkpoint as a version")
    versions.add_argument("--json", action="store_true", help="print JSON")
    versions_commands = versions.add_subparsers(dest="versions_command", metavar="ACTION")
    version_import = versions_commands.add_parser(
        "import", help="make a Transformers image-classification checkpoint (folder or Hub id) a new version")
    version_import.add_argument("source", metavar="ID_OR_FOLDER", help="a checkpoint folder or a Hub model id owner/name")
    version_import.add_argument("--revision", metavar="R", help="Hub ids: branch, tag or commit (default main)")
    # SUPPRESS: without it, the action's absent --json would undo a `versions --json import ...`.
    version_import.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")

    promote = commands.add_parser("promote", help="make a version production")
    promote.add_argument("version", metavar="V")
    promote.add_argument("--json", action="store_true", help="print JSON")

    rollback = commands.add_parser("rollback", help="make the previous production version production again")
    rollback.add_argument("--json", action="store_true", help="print JSON")

    export = commands.add_parser("export", help="write a version as a verified ONNX graph")
    export.add_argument("version", metavar="V", help="a version (v3) or alias (production, candidate, latest)")
    export.add_argument("--format", choices=["onnx"], default="onnx", help="the only format: onnx")
    export.add_argument("--out", metavar="FILE", help="where to write it (default ./<version>.onnx)")
    export.add_argument("--json", action="store_true", help="print JSON")

    monitor = commands.add_parser("monitor", help="live traffic per model version, from the prediction log")
    monitor.add_argument("--window", default="all", help="1h, 24h, 7d, 30d or all (default all)")
    monitor.add_argument("--low-confidence", type=float, default=0.5, metavar="P",
                         help="a top-1 score below P counts as low confidence (default 0.5)")
    monitor.add_argument("--json", action="store_true", help="print JSON")

    token = commands.add_parser("token", help="API tokens for maintainer calls over HTTP: create, list, revoke")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    token_create = token_commands.add_parser("create", help="create a token and print it once")
    token_create.add_argument("name", metavar="NAME", help="1-64 characters: letters, digits, '.', '_', '-'")
    token_create.add_argument("--json", action="store_true", help="print JSON")
    token_list = token_commands.add_parser("list", help="every token, revoked ones included")
    token_list.add_argument("--json", action="store_true", help="print JSON")
    token_revoke = token_commands.add_parser("revoke", help="revoke a token; the app refuses it from its next request")
    token_revoke.add_argument("name", metavar="NAME")
    token_revoke.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in TRAINING_SCRIPTS:
        args.arguments = extra + args.arguments  # every option belongs to the training script
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        return COMMANDS[args.command](args, settings)
    except ClassifrError as err:
        print(f"classifr: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as err:  # a full disk, a read-only folder, a failing drive: one line (docs/storage.md)
        problem = storage_error(err, "the result")
        if problem is None or not problem.pauses:
            raise
        print(f"classifr: error: {problem}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _open_service(settings: Settings):
    from classifr.app.project import open_service
    from classifr.inference.classifier import configure_runtime

    configure_runtime(settings.num_threads)
    return open_service(settings)


def _print(value: Any, as_json: bool, text: str) -> None:
    print(json.dumps(value, indent=2) if as_json else text)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    from classifr.ui.app import serve  # gradio is imported only when serving

    if args.port is not None:
        settings = replace(settings, server_port=args.port)
    if args.host:
        settings = replace(settings, server_name=args.host)
    serve(settings)
    return EXIT_OK


def cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    if args.top_k is not None and args.top_k < 1:
        print(f"classifr: error: --top-k must be at least 1, got {args.top_k}", file=sys.stderr)
        return EXIT_USAGE
    missing = [image for image in args.images if not Path(image).exists()]
    if len(missing) == len(args.images):  # nothing to classify: say so now, not after loading the model
        errors = [{"image": image, "error": f"{image} does not exist"} for image in missing]
        for error in errors:
            print(f"classifr: error: {error['error']}", file=sys.stderr)
        if args.json:
            _print(errors, True, "")
        return EXIT_FAILED
    service = _open_service(settings)
    results = []
    size = settings.max_batch_size
    try:
        for start in range(0, len(args.images), size):
            chunk = args.images[start : start + size]
            results.extend(service.predict_batch(chunk, top_k=args.top_k, origin="cli"))
    finally:
        service.close()  # writes the prediction log's queue before the process ends
    for result in results:
        if not result.ok:
            print(f"classifr: error: {result.error}", file=sys.stderr)
    lines = [
        f"{r.image} [{r.version}]: " + ", ".join(f"{p.label} ({p.score:.3f})" for p in r.predictions)
        for r in results
        if r.ok
    ]
    _print([r.to_json() for r in results], args.json, "\n".join(lines))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in {".png", ".jpg", ".jpeg", ".webp"}:
        print(f"classifr: error: --out must end in .png, .jpg or .webp, got {args.out!r}", file=sys.stderr)
        return EXIT_USAGE
    if not out.parent.is_dir():
        print(f"classifr: error: the folder of --out does not exist: {str(out.parent)!r}", file=sys.stderr)
        return EXIT_USAGE
    service = _open_service(settings)
    faithfulness = None  # the stage grid ("layers") has no map to measure
    try:
        if args.method == "layers":
            result = service.explain_layers(args.image)
        else:
            result = service.explain(
                args.image, method=args.method, target=args.target, view=args.view, steps=args.steps,
                baseline=args.baseline,
            )
            faithfulness = service.faithfulness(args.image, result)
    finally:
        service.close()  # stops the prediction log's writer and the dataset sync, as predict does
    if out.suffix.lower() == ".png":
        # Compression level 1: a 12-megapixel overlay writes in a fraction of a second, not seconds.
        result.picture.save(out, compress_level=1)
    else:
        result.picture.save(out, quality=92)
    summary = {**result.to_json(), "out": str(out)}
    text = f"{result.image} [{result.version}]: {summary['method']}"
    if result.explanation:
        text += f" of {result.explanation.target!r} ({result.explanation.score:.3f}), {result.explanation.settings}"
    text += f" -> {out}"
    if faithfulness is not None:
        summary["faithfulness"] = faithfulness.to_json()
        text += f"\n{faithfulness.sentence()}"
    _print(summary, args.json, text)
    return EXIT_OK


def _open_dataset(settings: Settings):
    """The project dataset, the serving model's labels, and the Hub sync when one is configured."""
    from classifr.app.project import open_dataset
    from classifr.data.hub_sync import open_sync

    dataset = open_dataset(settings)
    known = _serving_labels(settings)
    return dataset, known, open_sync(settings, dataset, known=lambda: known)


def _serving_labels(settings: Settings) -> list[str]:
    """The serving model's labels, from its config.json: torch is imported only to build a first v1."""
    from classifr.core.labels import checkpoint_labels

    if settings.model:
        if Path(settings.model).is_dir():
            return list(checkpoint_labels(Path(settings.model)))
        from transformers import AutoConfig  # a Hub id: only its config is fetched

        return list(AutoConfig.from_pretrained(settings.model, revision=settings.model_revision).id2label.values())
    registry = _registry(settings)
    if registry.is_empty():
        return []  # no version yet: every category is the project's own
    return list(checkpoint_labels(registry.local_path(registry.resolve("production"))))


def cmd_dataset(args: argparse.Namespace, settings: Settings) -> int:
    dataset, known, sync = _open_dataset(settings)
    try:
        return DATASET_COMMANDS[args.dataset_command](args, settings, dataset, known)
    finally:
        if sync is not None:
            sync.stop()  # pushes what this command added before the process ends


def cmd_dataset_add(args: argparse.Namespace, settings: Settings, dataset, known) -> int:
    from classifr.data.dataset import Example, validate_category

    if dataset.resolve_label(args.label, known) is None:
        validate_category(args.label)  # one clear error for a bad --label, not one per image
    examples = [Example(Path(image), args.label, name=image) for image in args.images]
    results = dataset.add_many(examples, source="upload", contributor=args.contributor, known=known)
    for result in results:
        if not result.ok:
            print(f"classifr: error: {result.reason}", file=sys.stderr)
    lines = [f"{r.name}: {r.status}" + (f" as {r.label!r} ({r.split})" if r.ok else "") for r in results]
    _print([r.to_json() for r in results], args.json, "\n".join(lines))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def cmd_dataset_import(args: argparse.Namespace, settings: Settings, dataset, known) -> int:
    from classifr.data.importing import import_dataset

    if args.limit is not None and args.limit < 1:
        print(f"classifr: error: --limit must be at least 1, got {args.limit}", file=sys.stderr)
        return EXIT_USAGE
    report = import_dataset(
        dataset,
        args.source,
        image_column=args.image_column,
        label_column=args.label_column,
        split=args.split,
        limit=args.limit,
        contributor=args.contributor,
        known=known,
        cache_dir=settings.cache_dir / "datasets",
        progress=not args.quiet,
    )
    text = (
        f"imported {report.source}: {report.added} added, {report.duplicates} already there, "
        f"{report.rejected} rejected, in {report.seconds:.1f} s"
    )
    _print(report.to_json(), args.json, text)
    return EXIT_OK


def cmd_dataset_stats(args: argparse.Namespace, settings: Settings, dataset, known) -> int:
    stats = dataset.stats(known)
    lines = [f"{stats['total']} rows, {stats['images']} images"]
    lines += [f"  {c['name']}: {c['total']}" + ("  (pending)" if c["pending"] else "") for c in stats["categories"]]
    lines.append("by source: " + ", ".join(f"{k} {v}" for k, v in stats["by_source"].items()))
    lines.append("by split: " + ", ".join(f"{k} {v}" for k, v in stats["by_split"].items()))
    if stats["conflicts"]:
        lines.append(f"{len(stats['conflicts'])} images have more than one label (see --json)")
    _print(stats, args.json, "\n".join(lines))
    return EXIT_OK


DATASET_COMMANDS = {"add": cmd_dataset_add, "import": cmd_dataset_import, "stats": cmd_dataset_stats}


# Commands that run a script of the training package as its own process: `classifr` never
# imports `training` (docs/architecture.md), the app keeps serving meanwhile, and `accelerate launch -m
# training.train` is the same script.
TRAINING_SCRIPTS = {"train": "training.train", "evaluate": "training.evaluation", "benchmark": "study.run"}


def cmd_training_script(args: argparse.Namespace, settings: Settings) -> int:
    import subprocess

    return subprocess.call([sys.executable, "-m", TRAINING_SCRIPTS[args.command], *args.arguments])


def _registry(settings: Settings):
    """The project's registry as it is: read-only commands never build a first version."""
    from classifr.app.project import open_registry  # not via the service: versions and monitor need no torch

    if settings.model:
        raise ClassifrError(f"CLASSIFR_MODEL={settings.model!r} is served directly; it has no versions")
    return open_registry(settings)


NO_VERSION_YET = "no model version yet: `classifr serve` or `classifr predict` builds the default one (v1)"


def _version_line(info) -> str:
    aliases = f"  ({', '.join(info.aliases)})" if info.aliases else ""
    parent = f"  parent {info.parent}" if info.parent else ""
    return f"{info.version}  {info.num_labels} labels  {info.created_at}{parent}{aliases}"


def cmd_versions(args: argparse.Namespace, settings: Settings) -> int:
    if args.versions_command == "import":
        return cmd_versions_import(args, settings)
    versions = _registry(settings).list_versions()
    if not versions and not args.json:
        print(NO_VERSION_YET)
        return EXIT_OK
    _print([v.to_json() for v in versions], args.json, "\n".join(_version_line(v) for v in versions))
    return EXIT_OK


def cmd_versions_import(args: argparse.Namespace, settings: Settings) -> int:
    """Publish a checkpoint as the next version (v1 is built first in a new project); no alias moves."""
    from classifr.app.project import default_version_for, open_registry
    from classifr.inference.classifier import configure_runtime
    from classifr.app.checkpoints import import_checkpoint

    if settings.model:
        raise ClassifrError(f"CLASSIFR_MODEL={settings.model!r} is served directly; it has no versions")
    configure_runtime(settings.num_threads)
    registry = open_registry(settings, default_version=default_version_for(settings))
    info = import_checkpoint(registry, args.source, revision=args.revision, cache_dir=settings.cache_dir / "hub",
                             verify_images=settings.onnx_verify_images)
    result = {"version": info.version, "source": info.metadata.get("source"), "revision": info.metadata.get("revision"),
              "num_labels": info.num_labels, "architecture": info.metadata.get("architecture"),
              "weights_sha256": info.metadata.get("weights_sha256")}
    text = (
        f"imported {result['source']} as {info.version} ({info.num_labels} labels, "
        f"revision {result['revision'] or 'none: a folder'}); not promoted.\n"
        f"next: classifr promote {info.version}    # serve it as it is\n"
        f"  or: classifr train --parent {info.version}    # add your labels to it first"
    )
    _print(result, args.json, text)
    return EXIT_OK


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    version = registry.resolve(args.version)
    _check_promotable(registry, version, settings)
    info = registry.promote(version)
    _print(info.to_json(), args.json, f"production is now {info.version}")
    return EXIT_OK


def _check_promotable(registry, version: str, settings: Settings) -> None:
    """Load and check `version` as the app would serve it; VersionCheckError (one line) when it may not."""
    from classifr.inference.classifier import configure_runtime
    from classifr.inference.version_check import check_promotable

    configure_runtime(settings.num_threads)
    check_promotable(registry.local_path(version), version=version, settings=settings)


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    _check_promotable(registry, registry.rollback_target(), settings)
    info = registry.rollback()
    _print(info.to_json(), args.json, f"production rolled back to {info.version}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    """Copy the version's verified ONNX graph; a version without one is exported and verified now."""
    import tempfile

    from classifr.inference.onnx_export import copy_verified, export_version, read_export

    registry = _registry(settings)
    version = registry.resolve(args.version)
    out = Path(args.out or f"{version}.onnx")
    if out.is_dir() or not out.parent.is_dir():
        print(f"classifr: error: --out must be a file in an existing folder, got {str(out)!r}", file=sys.stderr)
        return EXIT_USAGE
    folder = registry.local_path(version)
    export, source = read_export(folder), "registry"
    if export is None or not export.verified:
        from classifr.inference.classifier import configure_runtime

        configure_runtime(settings.num_threads)
        # An older version (published before ONNX exports) or one whose export failed: try now,
        # on the sample photos; the registry's immutable version folder is never written to.
        earlier = export.reason if export is not None else None
        with tempfile.TemporaryDirectory(prefix="classifr-export-") as tmp:
            shutil.copytree(folder, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.onnx", "onnx_export.json"))
            export, source = export_version(Path(tmp), version=version, quantize=False), "exported now"
            if not export.verified:
                before = f" (at publish: {earlier})" if earlier else ""
                raise ClassifrError(f"cannot export {version} to ONNX: {export.reason}{before}")
            copy_verified(Path(tmp), out)
    else:
        copy_verified(folder, out)
    summary = {**export.to_json(), "version": version, "source": source, "out": str(out)}
    text = (
        f"wrote {out} ({version}, {source}): max |logit difference| {export.max_abs_diff:.2g}, "
        f"top-1 agreement {export.top1_agreement:.1%} on {export.images} images (onnxruntime vs PyTorch)"
    )
    _print(summary, args.json, text)
    return EXIT_OK


def cmd_monitor(args: argparse.Namespace, settings: Settings) -> int:
    from classifr.monitoring.report import monitor_summary, window_start
    from classifr.monitoring.log import PredictionLog

    if not 0.0 < args.low_confidence < 1.0:
        print(f"classifr: error: --low-confidence must be between 0 and 1, got {args.low_confidence}", file=sys.stderr)
        return EXIT_USAGE
    try:
        since = window_start(args.window)
    except ValueError as err:
        print(f"classifr: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if not settings.prediction_log_path.is_file():
        raise ClassifrError(f"no prediction log yet at {settings.prediction_log_path}: serve or predict first")
    registry = None if settings.model else _registry(settings)
    serving = {} if registry is None or registry.is_empty() else {"production": registry.resolve("production")}
    with PredictionLog(settings.prediction_log_path) as log:
        summary = monitor_summary(log, registry=registry, since=since, serving=serving, low_confidence=args.low_confidence)
    _print(summary, args.json, _monitor_text(summary, args.window))
    return EXIT_OK


def _monitor_text(summary: dict[str, Any], window: str) -> str:
    lines = [f"{summary['total']} predictions ({window})"]
    for version, row in summary["by_version"].items():
        accuracy = row["accuracy_on_feedback"]
        lines.append(
            f"{version}: {row['predictions']} predictions, mean confidence {row['mean_confidence']:.2f}, "
            f"low confidence {row['low_confidence_share']:.1%}, corrected {row['corrected_share']:.1%}, "
            f"accuracy on feedback {'n/a' if accuracy is None else f'{accuracy:.1%}'}, "
            f"latency p50 {row['latency_ms']['p50']:.0f} ms / p95 {row['latency_ms']['p95']:.0f} ms"
        )
        lines.append(f"    drift: {row['drift']['message']}")
    return "\n".join(lines)


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from classifr.app.tokens import TokenStore

    store = TokenStore(settings.home)
    if args.token_command == "create":
        token = store.create(args.name)
        info = next(t for t in store.list() if t.name == args.name and t.prefix == token[: len(t.prefix)])
        print("store it now: Classifr keeps only its hash", file=sys.stderr)
        _print({"name": info.name, "token": token, "created_at": info.created_at}, args.json, token)
    elif args.token_command == "list":
        tokens = store.list()
        _print([t.to_json() for t in tokens], args.json, _token_table(tokens))
    else:
        info = store.revoke(args.name)
        _print(info.to_json(), args.json, f"revoked {info.name} ({info.prefix}...) at {info.revoked_at}")
    return EXIT_OK


def _token_table(tokens) -> str:
    if not tokens:
        return "no API tokens yet: classifr token create NAME"
    rows = [("name", "prefix", "created", "revoked")]
    rows += [(t.name, t.prefix, t.created_at, t.revoked_at or "-") for t in tokens]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3] for row in rows)


COMMANDS = {
    "serve": cmd_serve,
    "predict": cmd_predict,
    "explain": cmd_explain,
    "dataset": cmd_dataset,
    "train": cmd_training_script,
    "evaluate": cmd_training_script,
    "benchmark": cmd_training_script,
    "versions": cmd_versions,
    "monitor": cmd_monitor,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "export": cmd_export,
    "token": cmd_token,
}

if __name__ == "__main__":
    sys.exit(main())
