"""The feedback contract: what a confirmation or correction may say about the prediction it answers.

A client names a logged prediction by its id (the `id` of a `predict` result). What the model said
(version, labels, scores) comes from the server's prediction log, never from the client
(docs/api.md, "Feedback"). A client may pass back the whole `predict` result as it came: its other
fields must then agree with the log's record, so a forged payload is refused rather than half used.
Everything here runs on values from the browser or an API caller, so nothing is assumed about
their type or size.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
import reprlib
from dataclasses import dataclass
from typing import Any

from classifr.core.errors import FeedbackError
from classifr.data.dataset import Feedback

logger = logging.getLogger(__name__)

PREDICTION_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, as ClassifrService.predict_batch makes them
# The fields of `PredictionResult.to_json()`; "error" is there for failed results, refused below.
PAYLOAD_FIELDS = ("id", "image", "version", "predictions", "original_size", "variant", "error")
MAX_TEXT_LENGTH = 200
MAX_PREDICTIONS = 100
SCORE_TOLERANCE = 1e-6  # scores pass through JSON as doubles; this only absorbs rounding


@dataclass(frozen=True)
class PredictionClaim:
    """What a client says about the prediction it answers; fields it left out are None."""

    id: str | None
    version: str | None = None
    variant: str | None = None
    predictions: tuple[tuple[str, float], ...] | None = None
    original_size: tuple[int, int] | None = None


def parse_claim(payload: Any) -> PredictionClaim:
    """The claim in what a client sent: nothing, a prediction id, or a `predict` result (an object).

    FeedbackError, one line naming the problem, for anything else."""
    if payload is None or payload == "" or payload == {}:
        return PredictionClaim(id=None)
    if isinstance(payload, str):
        return PredictionClaim(id=prediction_id(payload))
    if not isinstance(payload, dict):
        raise FeedbackError(f"the prediction must be a predict result (an object) or its id, got {_kind(payload)}")
    unknown = [key for key in payload if key not in PAYLOAD_FIELDS]
    if unknown:
        raise FeedbackError(f"the prediction has an unexpected field {_short(unknown[0])}")
    if payload.get("error") is not None:
        raise FeedbackError("that prediction failed: there is nothing to confirm or correct")
    if "id" not in payload:
        raise FeedbackError("the prediction has no 'id': pass the predict result as it came back, or none")
    _text("image", payload.get("image"), optional=True)
    return PredictionClaim(
        id=prediction_id(payload["id"]),
        version=_text("version", payload.get("version"), optional=True),
        variant=_text("variant", payload.get("variant"), optional=True),
        predictions=_predictions(payload.get("predictions")),
        original_size=_size(payload.get("original_size")),
    )


def prediction_id(value: Any) -> str:
    """A prediction id as the server makes them (32 lower-case hex digits); FeedbackError otherwise."""
    if not isinstance(value, str) or not PREDICTION_ID.fullmatch(value):
        raise FeedbackError(f"a prediction id is 32 hex digits, got {_short(value)}")
    return value


def check_claim(claim: PredictionClaim, record: dict[str, Any]) -> None:
    """Refuse a claim whose fields disagree with the log's record of the prediction."""
    name = f"prediction {record['id'][:8]}"
    if claim.version is not None and claim.version != record["version"]:
        raise FeedbackError(f"{name} was made by {record['version']}, not {_short(claim.version)}")
    if claim.variant is not None and claim.variant != record["variant"]:
        raise FeedbackError(f"{name} was served by the {record['variant']}, not {_short(claim.variant)}")
    if claim.original_size is not None and claim.original_size != (record["width"], record["height"]):
        raise FeedbackError(f"{name} was of a {record['width']}x{record['height']} image, not {list(claim.original_size)}")
    if claim.predictions is not None and not _same_predictions(claim.predictions, record["topk"]):
        raise FeedbackError(f"the labels and scores sent do not match the server's record of {name}")


def feedback_of(record: dict[str, Any]) -> Feedback:
    """What the model said, from the log's record of a prediction (`PredictionLogQueries.prediction`)."""
    return Feedback(predicted_label=record["label"], score=float(record["score"]), model_version=record["version"])


def _same_predictions(claimed: tuple[tuple[str, float], ...], logged: list[list[Any]]) -> bool:
    if len(claimed) != len(logged):
        return False
    return all(
        label == logged_label and abs(score - logged_score) <= SCORE_TOLERANCE
        for (label, score), (logged_label, logged_score) in zip(claimed, logged)
    )


def _predictions(value: Any) -> tuple[tuple[str, float], ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not 0 < len(value) <= MAX_PREDICTIONS:
        raise FeedbackError(f"the prediction's 'predictions' must be a list of 1 to {MAX_PREDICTIONS} labels, got {_kind(value)}")
    parsed = []
    for entry in value:
        if not isinstance(entry, dict) or set(entry) != {"label", "score"}:
            raise FeedbackError(f"each of 'predictions' must be {{'label': ..., 'score': ...}}, got {_short(entry)}")
        score = entry["score"]
        if isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(score):
            raise FeedbackError(f"a score must be a number, got {_short(score)}")
        parsed.append((_text("label", entry["label"]), float(score)))
    return tuple(parsed)


def _size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list) or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value)
    ):
        raise FeedbackError(f"the prediction's 'original_size' must be [width, height], got {_short(value)}")
    return (value[0], value[1])


def _text(name: str, value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT_LENGTH:
        raise FeedbackError(f"the prediction's {name!r} must be text of 1 to {MAX_TEXT_LENGTH} characters, got {_short(value)}")
    return value


def _kind(value: Any) -> str:
    names = {list: "a list", dict: "an object", str: "text", bool: "true/false", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 40


def _short(value: Any) -> str:
    """A bounded repr: a client's value goes into a one-line message whatever its size."""
    return _REPR.repr(value)
