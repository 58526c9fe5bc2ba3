"""The version folder: the one module that knows its file names, their formats and their error policy.

A published version is a folder (docs/architecture.md, "Records"):

    config.json            the model config: labels (`id2label`, or the timm wrapper's `label_names`)
    model.safetensors      the weights (`save_pretrained`)
    preprocessor_config.json  the image processor, when the checkpoint has one
    README.md              the model card
    metrics.json           evaluation and training facts, written at publish (absent for v1)
    confusion_matrix.png   the held-out confusion matrix (absent for v1)
    model.onnx, onnx_export.json   the verified ONNX graph and its record (classifr.inference.onnx_export)
    classifr_version.json  the registry's record: version, parent, created_at, num_labels, metadata
    checksums.json         the sha256 of every other file, written by the registry when the version
                           is committed: `{"algorithm": "sha256", "files": {"model.safetensors": "<hex>", ...}}`

Error policy, the same for every reader: a file that is absent reads as "nothing there" (v1 has no
metrics); a file that is present but unreadable or malformed is logged once as a warning and reads
as "nothing there" too, with a one-line `problem` the UI can show. Nothing here raises for a damaged
optional file: a hand-edited metrics.json must not take the Monitor or the Model tab down. A
config.json that names no labels raises `VersionFolderError`, naming the file and the reason.

Checksums are the exception to that policy: a file that is missing or differs from its checksum
raises `CorruptVersionError`, because its weights must never be served. A version without
checksums.json (published by an older build) is loaded as it is and logged as unverified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classifr.core.errors import RegistryError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
PROCESSOR_FILE = "preprocessor_config.json"
# A checkpoint's weights, as save_pretrained writes them (one file or shards with an index).
SAFETENSORS_WEIGHTS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json")
PYTORCH_WEIGHTS = ("pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json")
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
ONNX_FILE = "model.onnx"
ONNX_RECORD_FILE = "onnx_export.json"
VERSION_FILE = "classifr_version.json"
CHECKSUMS_FILE = "checksums.json"
CHECKSUM_ALGORITHM = "sha256"
_HASH_CHUNK = 1 << 20


class VersionFolderError(RegistryError):
    """A required file of a version folder is missing or malformed; the message names it."""


class CorruptVersionError(VersionFolderError):
    """A file of a version is missing or differs from its checksum; the message names it."""


@dataclass(frozen=True)
class OptionalFile:
    """An optional JSON file of a version: its content ({} when absent or damaged) and what was wrong."""

    data: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # one line, for the UI, when the file exists but could not be used


def read_metrics(folder: Path) -> OptionalFile:
    """metrics.json: `{"metrics": {...}, ...}` as written at publish; empty for versions without one."""
    loaded = _read_optional_json(Path(folder) / METRICS_FILE)
    if loaded.problem or not loaded.data:
        return loaded
    if not isinstance(loaded.data.get("metrics", {}), dict):
        return _damaged(Path(folder) / METRICS_FILE, 'is malformed: expected an object with a "metrics" object')
    return loaded


def write_metrics(folder: Path, metrics: Mapping[str, Any]) -> Path:
    """Write metrics.json into a version folder that is being staged (the registry makes it durable)."""
    path = Path(folder) / METRICS_FILE
    path.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return path


def write_confusion_png(folder: Path, png: bytes) -> Path:
    path = Path(folder) / CONFUSION_FILE
    path.write_bytes(png)
    return path


def confusion_png(folder: Path) -> Path | None:
    path = Path(folder) / CONFUSION_FILE
    return path if path.is_file() else None


def read_optional_config(folder: Path | None) -> OptionalFile:
    """config.json under the optional-file policy, for displays that must not fail (the model card)."""
    if folder is None:
        return OptionalFile()
    return _read_optional_json(Path(folder) / CONFIG_FILE)


def num_labels(config: Mapping[str, Any]) -> int:
    """Label count from config.json without importing Transformers.

    Most configs store `id2label`; Transformers' timm wrapper (the default model) stores
    `label_names` and `num_classes` instead.
    """
    for key in ("id2label", "label_names"):
        labels = config.get(key)
        if isinstance(labels, (dict, list)) and labels:
            return len(labels)
    for key in ("num_labels", "num_classes"):
        count = config.get(key)
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            return count
    raise VersionFolderError(
        f"{CONFIG_FILE} names no labels: it needs id2label, label_names, num_labels or num_classes "
        f"(got keys {sorted(config)})"
    )


def architecture(config: Mapping[str, Any]) -> str | None:
    """The model's architecture from config.json: the timm wrapper's timm name, else the Transformers class."""
    if isinstance(config.get("architecture"), str):  # TimmWrapperConfig: "tf_efficientnet_lite0"
        return config["architecture"]
    classes = config.get("architectures")
    if isinstance(classes, list) and classes and isinstance(classes[0], str):
        return classes[0]
    model_type = config.get("model_type")
    return model_type if isinstance(model_type, str) else None


def checkpoint_weights(folder: Path) -> list[Path]:
    """A checkpoint's weight files: safetensors (with a shard index) when there are any, else PyTorch .bin."""
    folder = Path(folder)
    for patterns in (SAFETENSORS_WEIGHTS, PYTORCH_WEIGHTS):
        found = sorted({path for pattern in patterns for path in folder.glob(pattern) if path.is_file()})
        if any(path.suffix in (".safetensors", ".bin") for path in found):
            return found
    return []


def weights_checksum(folder: Path) -> str:
    """One sha256 over a checkpoint's weight files (names and contents): what a folder import records."""
    digest = hashlib.sha256()
    for path in checkpoint_weights(folder):
        digest.update(f"{path.name}\0{_file_checksum(path)}\n".encode())
    return digest.hexdigest()


def copy_checkpoint(source: Path, folder: Path) -> list[str]:
    """Copy a checkpoint's config, weights and image processor config into a version being staged;
    returns the names copied. The card is written separately (`write_card`)."""
    source, folder = Path(source), Path(folder)
    files = [source / CONFIG_FILE, *checkpoint_weights(source)]
    if (source / PROCESSOR_FILE).is_file():
        files.append(source / PROCESSOR_FILE)
    for path in files:
        shutil.copyfile(path, folder / path.name)
    return [path.name for path in files]


def read_card(folder: Path) -> str | None:
    """README.md of a checkpoint or version, None when it has none or it cannot be read as text."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        logger.warning("%s could not be read: %s", path, _one_line(err))
        return None


def write_card(folder: Path, text: str) -> Path:
    """Write README.md (the model card) into a version being staged."""
    path = Path(folder) / CARD_FILE
    path.write_text(text, encoding="utf-8")
    return path


def file_checksums(folder: Path) -> dict[str, str]:
    """The checksum of every file under `folder` by its relative POSIX name, checksums.json excepted."""
    folder = Path(folder)
    return {
        path.relative_to(folder).as_posix(): _file_checksum(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != CHECKSUMS_FILE
    }


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checksums_json(files: Mapping[str, str]) -> bytes:
    """The content of checksums.json for these {name: checksum} (the registry writes it durably)."""
    record = {"algorithm": CHECKSUM_ALGORITHM, "files": dict(sorted(files.items()))}
    return (json.dumps(record, indent=2) + "\n").encode("utf-8")


def write_checksums(folder: Path) -> Path:
    """Write checksums.json for every file now in `folder` (a version being staged)."""
    path = Path(folder) / CHECKSUMS_FILE
    path.write_bytes(checksums_json(file_checksums(folder)))
    return path


def has_checksums(folder: Path) -> bool:
    return (Path(folder) / CHECKSUMS_FILE).is_file()


def verify_checksums(folder: Path, *, name: str | None = None) -> bool:
    """Check every file checksums.json lists; True when all match, False when the version has none.

    Raises CorruptVersionError naming the first file that is missing or differs, or a malformed
    checksums.json. Files it does not list are ignored: a Hub download also holds the registry's
    own files (.gitattributes, the aliases). `name` (e.g. "v3") labels the messages.
    """
    folder = Path(folder)
    label = name or str(folder)
    path = folder / CHECKSUMS_FILE
    if not path.is_file():
        return False
    expected = _read_checksums(path, label)
    for relative, digest in expected.items():
        target = folder / relative
        if not target.is_file():
            raise CorruptVersionError(f"{label} is corrupt: {relative} is missing (listed in {CHECKSUMS_FILE})")
        try:
            actual = _file_checksum(target)
        except OSError as err:
            raise CorruptVersionError(f"{label} is corrupt: {relative} cannot be read: {_one_line(err)}") from err
        if actual != digest:
            raise CorruptVersionError(f"{label} is corrupt: {relative} differs from its checksum in {CHECKSUMS_FILE}")
    return True


def verify_version_files(folder: Path, *, name: str) -> None:
    """`verify_checksums` for a version about to be loaded: raises when damaged, logs a version without checksums."""
    if not verify_checksums(folder, name=name):
        logger.warning("%s has no %s (published by an older build, or not a registry version): its files are not verified",
                       name, CHECKSUMS_FILE)


def _read_checksums(path: Path, label: str) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CorruptVersionError(f"{label} is corrupt: {CHECKSUMS_FILE} cannot be read: {_one_line(err)}") from err
    files = data.get("files") if isinstance(data, dict) else None
    algorithm = data.get("algorithm") if isinstance(data, dict) else None
    if algorithm != CHECKSUM_ALGORITHM or not isinstance(files, dict) or not files:
        raise CorruptVersionError(
            f'{label} is corrupt: {CHECKSUMS_FILE} is malformed: expected {{"algorithm": "{CHECKSUM_ALGORITHM}", '
            f'"files": {{...}}}}'
        )
    if not all(isinstance(k, str) and isinstance(v, str) and _inside(k) for k, v in files.items()):
        raise CorruptVersionError(f"{label} is corrupt: {CHECKSUMS_FILE} lists a bad file name or checksum")
    return files


def _inside(name: str) -> bool:
    """A name that stays inside the version folder (a hand-edited list must not point elsewhere)."""
    path = Path(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts


def _file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_optional_json(path: Path) -> OptionalFile:
    if not path.is_file():
        return OptionalFile()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return _damaged(path, f"could not be read: {_one_line(err)}")
    if not isinstance(data, dict):
        return _damaged(path, "is not a JSON object")
    return OptionalFile(data=data)


def _damaged(path: Path, reason: str) -> OptionalFile:
    logger.warning("%s %s", path, reason)
    return OptionalFile(problem=f"{path.name} {reason}")


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
