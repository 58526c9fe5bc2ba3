"""What goes into the prediction log: the `LoggedPrediction` record, the log's errors, and the
checks of records and query arguments (cheap: `log()` runs them on the request thread).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from classifr.core.errors import ClassifrError

VARIANTS = ("production", "candidate", "direct", "pinned")  # pinned: an API call that named its version
# Where a prediction came from (docs/monitoring.md, "Origins"); "feedback": made only to record an
# answer that named no logged prediction.
SOURCES = ("ui", "api", "cli", "feedback")
FEEDBACK_KINDS = ("confirmed", "corrected")
MAX_THUMBNAIL_BYTES = 256 * 1024  # a thumbnail is small; this bounds the memory a full queue can hold
MAX_TEXT_LENGTH = 200
MAX_CLIENT_LENGTH = 100  # an IPv6 address with a zone is under 50; room for a host name
FLOAT16_MAX = float(np.finfo(np.float16).max)


class PredictionLogError(ClassifrError, OSError):
    """The prediction log file cannot be opened (not a database, or a newer schema)."""


class MonitoringValueError(ClassifrError, ValueError):
    """A record or a query argument has a bad value; the message names it."""


@dataclass(frozen=True)
class LoggedPrediction:
    """One served prediction, as the service hands it to `PredictionLog.log()`."""

    id: str  # uuid4 hex, made by the caller
    time: float  # unix seconds
    version: str  # model version, e.g. "v3"
    variant: str  # one of VARIANTS
    source: str  # one of SOURCES
    labels: tuple[str, ...]  # top-k labels, best first
    scores: tuple[float, ...]  # same length, each in [0, 1]
    latency_ms: float
    # Hashing a 12-megapixel JPEG or encoding a thumbnail takes milliseconds: the caller may pass
    # a function instead of the value, and the writer thread calls it, off the request path.
    image_sha256: str | Callable[[], str]
    width: int
    height: int
    nbytes: int
    embedding: np.ndarray | None = None  # 1-D pooled backbone features; stored as float16
    thumbnail: bytes | Callable[[], bytes | None] | None = None  # JPEG; stored only when the log stores images
    # The caller's address as the server saw it ("127.0.0.1", "2001:db8::1"); None when unknown.
    # Personal data: cleared with the thumbnails' age retention (docs/privacy.md).
    client: str | None = None


def _check_record(record: LoggedPrediction) -> np.ndarray | None:
    """Validate a record; a copy of its embedding (the caller may reuse its buffer).

    This runs on the request thread, so it favours cheap checks: the float16 conversion waits for
    the writer, and only the range that float16 can hold is checked here."""
    if not isinstance(record, LoggedPrediction):
        raise MonitoringValueError(f"expected a LoggedPrediction, got {type(record).__name__}")
    for name in ("id", "version"):
        _check_text(name, getattr(record, name))
    if not callable(record.image_sha256):
        _check_text("image_sha256", record.image_sha256)
    _check_number("time", record.time)
    if record.variant not in VARIANTS:
        raise MonitoringValueError(f"variant must be one of {', '.join(VARIANTS)}, got {record.variant!r}")
    if record.source not in SOURCES:
        raise MonitoringValueError(f"source must be one of {', '.join(SOURCES)}, got {record.source!r}")
    _check_topk(record.labels, record.scores)
    latency = _check_number("latency_ms", record.latency_ms)
    if latency < 0:
        raise MonitoringValueError(f"latency_ms must be >= 0, got {record.latency_ms!r}")
    for name in ("width", "height", "nbytes"):
        value = getattr(record, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise MonitoringValueError(f"{name} must be an integer >= 0, got {value!r}")
    if record.client is not None:
        _check_client(record.client)
    return None if record.embedding is None else _checked_embedding(record.embedding)


def _check_topk(labels: Sequence[str], scores: Sequence[float]) -> None:
    if not isinstance(labels, (tuple, list)) or not labels:
        raise MonitoringValueError(f"labels must be a non-empty tuple of strings, got {labels!r}")
    if not isinstance(scores, (tuple, list)) or len(scores) != len(labels):
        raise MonitoringValueError(f"scores must match labels in length ({len(labels)}), got {scores!r}")
    for label in labels:
        _check_text("label", label)
    previous = math.inf
    for score in scores:
        if not _is_real(score) or not 0.0 <= score <= 1.0:
            raise MonitoringValueError(f"scores must be probabilities in [0, 1], got {score!r} in {scores!r}")
        if score > previous + 1e-9:
            raise MonitoringValueError(f"labels and scores must be best first, got scores {scores!r}")
        previous = score


def _checked_embedding(embedding: Any) -> np.ndarray:
    if not isinstance(embedding, np.ndarray) or embedding.ndim != 1 or embedding.size == 0:
        shape = getattr(embedding, "shape", type(embedding).__name__)
        raise MonitoringValueError(f"embedding must be a non-empty 1-D numpy array, got {shape}")
    if embedding.dtype.kind not in "fiu":
        raise MonitoringValueError(f"embedding must be numeric, got dtype {embedding.dtype}")
    # NaN fails both comparisons; beyond +-65504 float16 would store inf.
    if not (embedding.min() >= -FLOAT16_MAX and embedding.max() <= FLOAT16_MAX):
        raise MonitoringValueError(f"embedding has NaN or values beyond float16's range (+-{FLOAT16_MAX:g})")
    return embedding.copy()


def _check_thumbnail(thumbnail: Any) -> bytes | None:
    if thumbnail is None:
        return None
    if not isinstance(thumbnail, (bytes, bytearray, memoryview)):
        raise MonitoringValueError(f"thumbnail must be JPEG bytes, got {type(thumbnail).__name__}")
    data = bytes(thumbnail)
    if not data.startswith(b"\xff\xd8"):
        raise MonitoringValueError(f"thumbnail must be JPEG bytes, got data starting with {data[:4]!r}")
    if len(data) > MAX_THUMBNAIL_BYTES:
        raise MonitoringValueError(f"thumbnail must be at most {MAX_THUMBNAIL_BYTES} bytes, got {len(data)}")
    return data


def _check_client(value: Any) -> str:
    # isprintable(): no control characters (a newline would forge a line in whatever prints it).
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_CLIENT_LENGTH or not value.isprintable():
        shown = repr(value)
        if isinstance(value, str) and len(value) > MAX_CLIENT_LENGTH:  # name it, on one readable line
            shown = f"{value[:MAX_CLIENT_LENGTH]!r}... ({len(value)} characters)"
        raise MonitoringValueError(f"client must be None or an address of at most {MAX_CLIENT_LENGTH} printable characters, got {shown}")
    return value


def _check_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT_LENGTH:
        raise MonitoringValueError(f"{name} must be a non-empty string of at most {MAX_TEXT_LENGTH} characters, got {value!r}")
    return value


def _is_real(value: Any) -> bool:
    """A real number and not a bool; the common float is checked first (this runs per record)."""
    return type(value) is float or (isinstance(value, numbers.Real) and not isinstance(value, bool))


def _check_number(name: str, value: Any) -> float:
    if not _is_real(value) or not math.isfinite(value):
        raise MonitoringValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_probability(name: str, value: Any) -> float:
    number = _check_number(name, value)
    if not 0.0 <= number <= 1.0:
        raise MonitoringValueError(f"{name} must be between 0 and 1, got {value!r}")
    return number


def _check_count(name: str, value: Any, *, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise MonitoringValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)
