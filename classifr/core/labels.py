"""LabelSet: the class names of a model, in the order of its output rows.

Ids are positions in the classifier head. Adding labels appends rows and never renumbers the
existing ones, so a version's predictions stay comparable with its parent's.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from classifr.core.errors import LabelError

logger = logging.getLogger(__name__)

MAX_LABEL_LENGTH = 64
MIN_SINGULAR_LENGTH = 2  # "tvs" -> "tv", but "is" is not the plural of "i"


def normalize_label(name: object) -> str:
    """Return `name` trimmed, or raise LabelError saying what is wrong with it."""
    if not isinstance(name, str):
        raise LabelError(f"label must be a string, got {type(name).__name__}: {name!r}")
    label = unicodedata.normalize("NFC", name).strip()
    if not label:
        raise LabelError(f"label is empty: {name!r}")
    if len(label) > MAX_LABEL_LENGTH:
        raise LabelError(f"label is longer than {MAX_LABEL_LENGTH} characters: {label[:70]!r}...")
    if "/" in label or "\\" in label:
        raise LabelError(f"label must not contain a path separator: {label!r}")
    if any(unicodedata.category(ch).startswith("C") for ch in label):
        raise LabelError(f"label must not contain control characters: {label!r}")
    return label


@dataclass(frozen=True)
class LabelSet:
    """An ordered, duplicate-free tuple of labels (unique ignoring case)."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for name in self.names:
            if normalize_label(name) != name:
                raise LabelError(f"label has surrounding whitespace or is not normalized: {name!r}")
            key = name.casefold()
            if key in seen:
                raise LabelError(f"duplicate label {name!r} (clashes with {seen[key]!r})")
            seen[key] = name

    @classmethod
    def from_id2label(cls, id2label: Mapping[int | str, str]) -> LabelSet:
        """Build from a Transformers `config.id2label` (keys may be strings after JSON)."""
        ids = sorted(int(i) for i in id2label)
        if ids != list(range(len(ids))):
            raise LabelError(f"id2label ids must be 0..{len(ids) - 1} without gaps, got {ids[:10]}...")
        by_id = {int(i): name for i, name in id2label.items()}
        return cls(tuple(by_id[i] for i in ids))

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.casefold() in {n.casefold() for n in self.names}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def id_of(self, name: str) -> int:
        """The id of `name` (matched ignoring case); LabelError names the unknown label."""
        key = normalize_label(name).casefold()
        for i, existing in enumerate(self.names):
            if existing.casefold() == key:
                return i
        raise LabelError(f"unknown label {name!r}; the model has {len(self.names)} labels")

    def with_added(self, new_names: Iterable[str]) -> LabelSet:
        """Append the labels not yet present (ignoring case); existing ids are unchanged."""
        names = list(self.names)
        for raw in new_names:
            name = normalize_label(raw)
            if name not in self and name.casefold() not in {n.casefold() for n in names}:
                names.append(name)
        return LabelSet(tuple(names))


def checkpoint_labels(folder: Path) -> LabelSet:
    """The labels of a saved checkpoint, read from its config.json without loading the model."""
    config_file = Path(folder) / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise LabelError(f"cannot read the labels of {str(config_file)!r}: {err}") from None
    if "id2label" in config:
        return LabelSet.from_id2label(config["id2label"])
    if "label_names" in config:  # TimmWrapperConfig saves its labels as a list
        return LabelSet(tuple(config["label_names"]))
    raise LabelError(f"{str(config_file)!r} names no labels (no id2label or label_names)")


def near_duplicates(name: str, existing: Iterable[str]) -> list[str]:
    """The labels of `existing` that a contributor typing `name` may have meant, in their order:
    the same ignoring case, spacing or hyphens ("T-shirt", "tshirt"), singular and plural
    ("hat", "hats"), or all of one's words among the other's ("hat", "cowboy hat"). A label
    spelled exactly as `name` is not a near-duplicate of it (docs/features.md, "New categories")."""
    words = _word_forms(name)
    found: list[str] = []
    for label in existing:
        if label != name and label not in found and _alike(words, _word_forms(label), name, label):
            found.append(label)
    return found


def _alike(words: list[set[str]], other: list[set[str]], name: str, label: str) -> bool:
    if not words or not other:  # no letters or digits to compare: only case can differ
        return name.casefold() == label.casefold()
    if _compact(name) == _compact(label):
        return True
    shorter, longer = sorted((words, other), key=len)
    return all(any(forms & candidate for candidate in longer) for forms in shorter)


def _word_forms(label: str) -> list[set[str]]:
    """Each word of `label`, casefolded, with the singulars it may be the plural of."""
    return [_singulars(word) for word in re.findall(r"\w+", label.casefold())]


def _singulars(word: str) -> set[str]:
    forms = {word}
    if word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if word.endswith("es"):
        forms.add(word[:-2])
    if word.endswith("s") and not word.endswith("ss"):
        forms.add(word[:-1])
    return {form for form in forms if len(form) >= MIN_SINGULAR_LENGTH}


def _compact(label: str) -> str:
    return "".join(re.findall(r"\w+", label.casefold()))
