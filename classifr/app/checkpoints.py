"""Import any Transformers image-classification checkpoint as a new registry version.

The source is a local checkpoint folder or a Hub model id (downloaded at a revision, pinned to the
commit it resolved to). It is validated before anything is published: it must load with the Auto
classes as an image classifier with labels and an image processor (`Classifier.load`), its labels
unique, its last layer a linear head that training can extend. The version keeps the checkpoint's
config, weights, processor config and card (docs/retraining.md, "Starting from another checkpoint
or backbone"); no alias points at it until a maintainer promotes it or trains from it.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from classifr.core.errors import ClassifrError
from classifr.core.text import escape_markdown
from classifr.versions import folder as version_folder
from classifr.versions.registry import ModelRegistry, VersionInfo

logger = logging.getLogger(__name__)

# Only what a version needs: config, weights (safetensors preferred), processor config, card.
_HUB_FILES = [version_folder.CONFIG_FILE, version_folder.PROCESSOR_FILE, version_folder.CARD_FILE,
              *version_folder.SAFETENSORS_WEIGHTS]
_HUB_FALLBACK_WEIGHTS = list(version_folder.PYTORCH_WEIGHTS)
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")


class CheckpointImportError(ClassifrError):
    """A checkpoint that cannot become a version; the one-line message names the source and why."""


@dataclass(frozen=True)
class _Checkpoint:
    """A checkpoint on local disk and where it came from."""

    folder: Path
    source: str  # the Hub id, or the folder's absolute path
    revision: str | None  # the resolved commit sha (Hub), None for a folder


def import_checkpoint(
    registry: ModelRegistry,
    source: str | Path,
    *,
    cache_dir: Path,
    revision: str | None = None,
    hub: Any = None,
    verify_images: int = 64,
) -> VersionInfo:
    """Publish the checkpoint at `source` (a folder or a Hub id) as the next version, without alias.

    `hub`: an `HfApi`-shaped client (None: a real `HfApi()`); downloads go under `cache_dir`.
    `verify_images`: sample photos the ONNX export is checked on (`CLASSIFR_ONNX_VERIFY_IMAGES`).
    Raises CheckpointImportError, and publishes nothing, when the source cannot be used.
    """
    checkpoint = _locate(str(source), revision=revision, cache_dir=Path(cache_dir), hub=hub)
    config = _validate(checkpoint)
    weights_sha256 = version_folder.weights_checksum(checkpoint.folder)
    card = _card(checkpoint, config)

    def write(staging: Path) -> None:
        from classifr.inference.onnx_export import export_version, sample_verification_images

        version_folder.copy_checkpoint(checkpoint.folder, staging)
        # Verified on the sample photos like v1; a failed export is recorded and the version served by PyTorch.
        export = export_version(staging, version=f"import of {checkpoint.source}",
                                images=sample_verification_images(verify_images))
        version_folder.write_card(staging, f"{card}\nONNX: {escape_markdown(export.summary())}\n")

    metadata = {
        "source": checkpoint.source,
        "revision": checkpoint.revision,
        "weights_sha256": weights_sha256,
        "architecture": version_folder.architecture(config),
        "imported": True,
    }
    info = registry.publish(write, parent=None, metadata=metadata)
    logger.info("imported %s at %s as %s", checkpoint.source, checkpoint.revision or "(folder)", info.version)
    return info


def _locate(source: str, *, revision: str | None, cache_dir: Path, hub: Any) -> _Checkpoint:
    path = Path(source).expanduser()
    if path.is_dir():
        if revision is not None:
            raise CheckpointImportError(f"--revision applies to Hub ids only; {source!r} is a folder")
        return _Checkpoint(folder=path.resolve(), source=str(path.resolve()), revision=None)
    if path.exists():
        raise CheckpointImportError(f"{source!r} is a file: give a checkpoint folder or a Hub model id")
    if _looks_like_path(source):
        raise CheckpointImportError(f"the folder {source!r} does not exist")
    return _download(source, revision=revision, cache_dir=cache_dir, hub=hub)


def _looks_like_path(source: str) -> bool:
    """A Hub id is `name` or `owner/name`; anything else that does not exist is a missing folder."""
    return source.startswith((".", "/", "~")) or "\\" in source or source.count("/") > 1 or not source.strip()


def _download(repo_id: str, *, revision: str | None, cache_dir: Path, hub: Any) -> _Checkpoint:
    client = hub if hub is not None else HfApi()
    at = f"{repo_id}@{revision}" if revision else repo_id
    try:
        folder = Path(client.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=_HUB_FILES))
        if not version_folder.checkpoint_weights(folder):  # an older checkpoint: PyTorch weights only
            folder = Path(client.snapshot_download(repo_id, revision=folder.name, cache_dir=cache_dir,
                                                   allow_patterns=_HUB_FALLBACK_WEIGHTS))
    except RevisionNotFoundError as err:
        raise CheckpointImportError(f"the Hub model {repo_id!r} has no revision {revision!r}") from err
    except GatedRepoError as err:
        raise CheckpointImportError(f"the Hub model {repo_id!r} is gated: accept its terms and set HF_TOKEN") from err
    except RepositoryNotFoundError as err:
        raise CheckpointImportError(
            f"{repo_id!r} is neither a folder nor a Hub model (or it is private: set HF_TOKEN)"
        ) from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise CheckpointImportError(
            f"cannot download {at}: offline (HF_HUB_OFFLINE, or no network) and it is not in the cache"
        ) from err
    except (HfHubHTTPError, OSError) as err:
        raise CheckpointImportError(f"cannot download {at}: {_first_line(err)}") from err
    # The cache names each snapshot folder by the commit it resolved to (also for a branch or tag).
    sha = folder.name if _COMMIT_SHA.match(folder.name) else None
    if sha is None:
        logger.warning("could not tell which commit %s resolved to (snapshot folder %s)", at, folder)
    return _Checkpoint(folder=folder, source=repo_id, revision=sha)


def _validate(checkpoint: _Checkpoint) -> dict[str, Any]:
    """The checkpoint's config.json, once it has loaded as an image classifier training can extend."""
    from classifr.inference.classifier import Classifier  # torch and transformers only when importing

    name = checkpoint.source
    config_path = checkpoint.folder / version_folder.CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointImportError(f"cannot import {name}: it has no {version_folder.CONFIG_FILE}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointImportError(f"cannot import {name}: {version_folder.CONFIG_FILE} is unreadable: {_first_line(err)}") from err
    if not isinstance(config, dict) or not any(config.get(key) for key in ("id2label", "label_names")):
        raise CheckpointImportError(f"cannot import {name}: its {version_folder.CONFIG_FILE} names no labels (id2label)")
    if not version_folder.checkpoint_weights(checkpoint.folder):
        raise CheckpointImportError(f"cannot import {name}: it has no weights (model.safetensors or pytorch_model.bin)")
    try:
        # Loads model and processor with the Auto classes, checks labels (unique) and the linear head.
        Classifier.load(checkpoint.folder, version=name)
    except ClassifrError as err:
        raise CheckpointImportError(f"cannot import {name}: {err}") from err
    return config


def _card(checkpoint: _Checkpoint, config: dict[str, Any]) -> str:
    """The checkpoint's own card with an import note after its front matter; a generated one without."""
    date = datetime.now(timezone.utc).date().isoformat()
    at = f"revision `{checkpoint.revision}`" if checkpoint.revision else "no revision (a local folder)"
    note = f"> Imported into Classifr from {_code(checkpoint.source)} at {at} on {date}.\n"
    card = version_folder.read_card(checkpoint.folder)
    if card is None:
        return _generated_card(checkpoint, config, note)
    front, body = _split_front_matter(card)
    return f"{front}{note}\n{body}"


def _generated_card(checkpoint: _Checkpoint, config: dict[str, Any], note: str) -> str:
    labels = config.get("label_names") or list((config.get("id2label") or {}).values())
    shown = ", ".join(escape_markdown(label) for label in labels[:20]) + (", ..." if len(labels) > 20 else "")
    return (
        "---\nlibrary_name: transformers\npipeline_tag: image-classification\ntags:\n- classifr\n- imported\n---\n\n"
        f"{note}\n# {escape_markdown(checkpoint.source)}\n\n"
        f"An image classifier ({escape_markdown(version_folder.architecture(config) or 'unknown architecture')}) "
        f"with {len(labels)} labels: {shown}.\nIts source came without a model card.\n"
    )


def _code(text: str) -> str:
    """`text` as a Markdown code span (shown literally; a backtick inside would end it)."""
    return "`" + text.replace("`", "'") + "`"


def _split_front_matter(card: str) -> tuple[str, str]:
    """(YAML front matter with its fences and a blank line, the rest); ("", card) when there is none."""
    if card.startswith("---\n"):
        end = card.find("\n---\n", 4)
        if end != -1:
            return card[: end + 5] + "\n", card[end + 5 :].lstrip("\n")
    return "", card


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
