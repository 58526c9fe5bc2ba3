"""The promotion gate: when `--promote auto` may make a candidate production.

Adding labels asks the model a harder question (more answers to choose from), so accuracy on the
old labels alone would refuse good models. The gate judges two things apart
(docs/retraining.md#the-promotion-gate):

* forgetting: of the held-out photos of the parent's labels that the parent got right, the share
  the candidate gets wrong when it chooses among the parent's labels only;
* the new labels: each must be measurable (enough held-out photos) and reach a recall and a
  precision floor.

Photos of old labels now answered with a new label (and the reverse) are reported as the
confusions added, not gated: they are the new question, which the new labels' precision and
recall already judge.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from classifr.data.split import MIN_HELD_OUT, photos_to_measure

logger = logging.getLogger(__name__)

MAX_FORGETTING = 0.015  # of the old-label photos the parent got right, at most 1.5% may be lost...
FORGIVEN_PHOTOS = 1  # ...or a single photo, which is no evidence of forgetting on a small held-out set
MIN_NEW_LABEL_RECALL = 0.6
MIN_NEW_LABEL_PRECISION = 0.5
MAX_CONFUSIONS_SHOWN = 3


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # why it failed, one plain sentence each
    warnings: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  # one plain sentence per check, passed or not
    thresholds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def thresholds() -> dict[str, float]:
    return {"max_forgetting": MAX_FORGETTING, "forgiven_photos": FORGIVEN_PHOTOS, "min_recall": MIN_NEW_LABEL_RECALL,
            "min_precision": MIN_NEW_LABEL_PRECISION, "min_held_out": MIN_HELD_OUT}


def check_gate(comparison: Any, labels_added: Sequence[str], *, images_per_label: Mapping[str, int] | None = None) -> GateResult:
    """Pass when the candidate forgets (almost) nothing and every new label is measured and good enough.

    `comparison`: training.metrics.Comparison; `images_per_label`: all photos of each label (train
    and held out), to say how many more an unmeasurable label needs.
    """
    reasons: list[str] = []
    warnings: list[str] = []
    summary = [_forgetting_line(comparison.old_labels, reasons, warnings)]
    for label in labels_added:
        row = comparison.new_labels.get(label) or {"held_out": 0, "recall": None, "precision": None, "predicted": 0, "right": 0}
        summary.append(_new_label_line(label, row, (images_per_label or {}).get(label), reasons))
    if comparison.confusions_added:
        shown = comparison.confusions_added[:MAX_CONFUSIONS_SHOWN]
        pairs = "; ".join(f"{c['true']!r} taken for {c['predicted']!r} {c['count']} times" for c in shown)
        summary.append(f"New mix-ups between old and new labels: {pairs}.")
    result = GateResult(passed=not reasons, reasons=reasons, warnings=warnings, summary=summary, thresholds=thresholds())
    logger.info("gate %s: %s", "passed" if result.passed else "failed", "; ".join(reasons) or "all checks passed")
    return result


def _forgetting_line(old: Mapping[str, Any] | None, reasons: list[str], warnings: list[str]) -> str:
    if old is None or not old["parent_right"]:
        line = "Forgetting not measured: no held-out photo of an earlier label that the previous version got right."
        warnings.append(line)
        return line
    right, lost, share = old["parent_right"], old["forgotten"], old["forgetting"]
    measured = (f"of the {right} held-out photos of earlier labels that the previous version got right, "
                f"{lost} ({share:.1%}) now get another earlier label")
    taken = old.get("taken_by_new_labels", 0)
    if lost > FORGIVEN_PHOTOS and share > MAX_FORGETTING:
        reasons.append(f"It forgets: {measured}; at most {MAX_FORGETTING:.1%} is allowed.")
        return reasons[-1]
    line = f"Kept what it knew: {measured} (at most {MAX_FORGETTING:.1%} allowed)."
    if taken:  # judged by the new labels' precision below, not here: close new labels take some by right
        line += f" {taken} of them are now answered with a new label."
    return line


def _new_label_line(label: str, row: Mapping[str, Any], images: int | None, reasons: list[str]) -> str:
    held = row["held_out"]
    if held < MIN_HELD_OUT:
        more = photos_to_measure(images) if images is not None else MIN_HELD_OUT - held
        of_all = f" of its {images} photos" if images is not None else ""
        reasons.append(
            f"New label {label!r} cannot be measured yet: only {held}{of_all} held out for testing, "
            f"{MIN_HELD_OUT} needed; add at least {max(more, 1)} more photos of it (or promote by hand)."
        )
        return reasons[-1]
    recall, precision = row["recall"], row["precision"]
    found = f"found {row['right']} of its {held} held-out photos ({recall:.0%})"
    said = (f"{row['right']} of the {row['predicted']} photos it called {label!r} were right ({precision:.0%})"
            if precision is not None else f"it never answered {label!r}")
    problems = []
    if recall < MIN_NEW_LABEL_RECALL:
        problems.append(f"it should find at least {MIN_NEW_LABEL_RECALL:.0%}")
    if precision is None or precision < MIN_NEW_LABEL_PRECISION:
        problems.append(f"at least {MIN_NEW_LABEL_PRECISION:.0%} of its answers should be right")
    if problems:
        reasons.append(f"New label {label!r} is not good enough: {found}; {said}; {' and '.join(problems)}.")
        return reasons[-1]
    return f"New label {label!r}: {found}; {said}."
