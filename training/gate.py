"""The promotion gate: when `--promote auto` may make a candidate production."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

MAX_SHARED_ACCURACY_DROP = 0.01  # at most 1 point below the parent on labels both know
MIN_NEW_LABEL_RECALL = 0.6
MIN_EVAL_IMAGES = 10  # fewer eval images of a new label: its recall is too noisy to trust alone


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # why it failed
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_gate(comparison: Any, labels_added: Sequence[str]) -> GateResult:
    """Shared-label accuracy within 1 point of the parent and recall >= 0.6 on every new label."""
    reasons, warnings = [], []
    new, old = comparison.shared_accuracy_new, comparison.shared_accuracy_parent
    if new is not None and old is not None and new < old - MAX_SHARED_ACCURACY_DROP:
        reasons.append(f"accuracy on shared labels fell from {old:.1%} to {new:.1%} (more than 1 point)")
    for label in labels_added:
        support = comparison.new_label_support.get(label, 0)
        recall = comparison.new_label_recall.get(label)
        if support == 0 or recall is None:
            reasons.append(f"new label {label!r} has no eval image, so its recall is unknown")
            continue
        if recall < MIN_NEW_LABEL_RECALL:
            reasons.append(f"new label {label!r} has recall {recall:.1%} < {MIN_NEW_LABEL_RECALL:.0%}")
        if support < MIN_EVAL_IMAGES:
            warnings.append(f"new label {label!r} has only {support} eval images; add more for a reliable recall")
    return GateResult(passed=not reasons, reasons=reasons, warnings=warnings)
