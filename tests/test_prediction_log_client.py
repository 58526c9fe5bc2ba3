"""The caller's address in the prediction log: written, read back, checked, added to logs written
before it existed, and cleared with the thumbnails' age retention (docs/privacy.md)."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from classifr.monitoring.log import PredictionLog
from classifr.monitoring.queries import PredictionLogQueries
from classifr.monitoring.records import LoggedPrediction, MonitoringValueError
from classifr.monitoring.schema import _open_for_reading

DAY_S = 86400.0

# The log's schema as schema version 1 first shipped it, before the `client` column.
_COVERED = "score, latency_ms, feedback, variant, source, label"
OLD_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS predictions (
        id TEXT PRIMARY KEY, time REAL NOT NULL, version TEXT NOT NULL, variant TEXT NOT NULL,
        source TEXT NOT NULL, label TEXT NOT NULL, score REAL NOT NULL, topk TEXT NOT NULL,
        latency_ms REAL NOT NULL, image_sha256 TEXT NOT NULL, width INTEGER, height INTEGER,
        nbytes INTEGER, embedding BLOB, feedback TEXT, true_label TEXT, feedback_time REAL
    )""",
    "CREATE TABLE IF NOT EXISTS images (prediction_id TEXT PRIMARY KEY, jpeg BLOB NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time, version, {_COVERED})",
    f"CREATE INDEX IF NOT EXISTS predictions_version_time ON predictions (version, time, {_COVERED})",
    "CREATE INDEX IF NOT EXISTS predictions_image ON predictions (image_sha256, time)",
    "CREATE INDEX IF NOT EXISTS predictions_feedback ON predictions (feedback, feedback_time) WHERE feedback IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS predictions_embedding ON predictions (time) WHERE embedding IS NOT NULL",
)


def record(*, client: object = None, age_days: float = 0.0, **overrides) -> LoggedPrediction:
    values = dict(
        id=uuid.uuid4().hex, time=time.time() - age_days * DAY_S, version="v1", variant="production", source="api",
        labels=("sandal", "sneaker"), scores=(0.9, 0.05), latency_ms=8.0, image_sha256=uuid.uuid4().hex * 2,
        width=400, height=533, nbytes=30_000, thumbnail=b"\xff\xd8 a jpeg", client=client,
    )  # fmt: skip
    values.update(overrides)
    return LoggedPrediction(**values)


def stored_clients(path: Path) -> dict[str, str | None]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT id, client FROM predictions"))


class ReadOnlyQueries(PredictionLogQueries):
    """The queries on a file no writer of this version opened (e.g. storing is paused)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _reader(self):
        return _open_for_reading(self.path)


def test_the_client_is_written_and_read_back_and_none_stays_null(tmp_path):
    path = tmp_path / "predictions.sqlite"
    ipv4, ipv6, unknown = record(client="127.0.0.1"), record(client="2001:db8::1"), record(client=None, source="ui")
    with PredictionLog(path) as log:
        for item in (ipv4, ipv6, unknown):
            log.log(item)
        assert log.flush()
        assert [log.prediction(item.id)["client"] for item in (ipv4, ipv6, unknown)] == ["127.0.0.1", "2001:db8::1", None]
        found = log.prediction(ipv6.id)
        assert found["source"] == "api" and json.loads(json.dumps(found)) == found
    assert stored_clients(path) == {ipv4.id: "127.0.0.1", ipv6.id: "2001:db8::1", unknown.id: None}


@pytest.mark.parametrize(
    "client, named",
    [
        ("1" * 500, "'" + "1" * 100 + "'... (500 characters)"),
        ("10.0.0.1\nforged log line", r"'10.0.0.1\nforged log line'"),
        ("10.0.0.1\x00", r"'10.0.0.1\x00'"),
        (42, "got 42"),
        ("", "got ''"),
    ],
)
def test_a_bad_client_is_refused_naming_it_and_nothing_is_written(tmp_path, client, named):
    path = tmp_path / "predictions.sqlite"
    with PredictionLog(path) as log:
        with pytest.raises(MonitoringValueError) as raised:
            log.log(record(client=client))
        message = str(raised.value)
        assert message.startswith("client must be None or an address of at most 100") and named in message
        assert "\n" not in message  # one line, even for a newline in the value
        assert log.flush()
    assert stored_clients(path) == {}


def test_an_address_of_100_characters_is_kept_whole(tmp_path):
    longest = "h" * 100
    with PredictionLog(tmp_path / "predictions.sqlite") as log:
        item = record(client=longest)
        log.log(item)
        assert log.flush()
        assert log.prediction(item.id)["client"] == longest


def _old_log(path: Path) -> str:
    """A log as written before the `client` column: schema version 1, one prediction."""
    with sqlite3.connect(path) as conn:
        for statement in OLD_SCHEMA:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO predictions (id, time, version, variant, source, label, score, topk, latency_ms, "
            "image_sha256, width, height, nbytes) VALUES ('old', ?, 'v1', 'production', 'ui', 'sandal', 0.7, "
            "'[[\"sandal\", 0.7]]', 9.0, ?, 8, 8, 100)",
            (time.time() - 40 * DAY_S, "a" * 64),
        )
    return "old"


def test_a_log_from_before_the_client_column_reads_then_gains_it_and_keeps_its_row(tmp_path):
    path = tmp_path / "predictions.sqlite"
    old_id = _old_log(path)

    before = ReadOnlyQueries(path)  # read before any writer of this version opened it
    assert before.prediction(old_id)["client"] is None and before.prediction(old_id)["label"] == "sandal"
    assert before.summary()["total"] == 1 and before.count() == 1

    aged, fresh = record(client="192.0.2.7", age_days=31), record(client="2001:db8::2")
    with PredictionLog(path, thumbnail_retention_days=30) as log:
        log.log(aged)
        log.log(fresh)
        assert log.flush()  # retention ran, on the migrated file, through the new index
        assert log.prediction(old_id)["client"] is None and log.prediction(old_id)["topk"] == [["sandal", 0.7]]
        assert log.prediction(fresh.id)["client"] == "2001:db8::2"
        assert log.prediction(aged.id)["client"] is None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1  # no schema version change
        columns = [row[1] for row in conn.execute("PRAGMA table_info(predictions)")]
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert columns[-1] == "client" and columns.count("client") == 1 and "predictions_client" in indexes
    assert stored_clients(path) == {old_id: None, aged.id: None, fresh.id: "2001:db8::2"}
    with PredictionLog(path) as again:  # a second open finds the column and adds nothing
        assert again.prediction(fresh.id)["client"] == "2001:db8::2"


def test_retention_clears_old_addresses_answered_or_not_and_keeps_newer_ones(tmp_path):
    path = tmp_path / "predictions.sqlite"
    old, old_answered, recent = (
        record(client="198.51.100.1", age_days=31),
        record(client="198.51.100.2", age_days=45),
        record(client="198.51.100.3", age_days=29),
    )
    with PredictionLog(path, thumbnail_retention_days=30) as log:
        for item in (old, old_answered, recent):
            log.log(item)
        log.record_feedback(label="sandal", kind="confirmed", prediction_id=old_answered.id)
        assert log.flush()
        assert [log.prediction(item.id)["client"] for item in (old, old_answered, recent)] == [None, None, "198.51.100.3"]
        # The answered photo keeps its thumbnail (docs/privacy.md); only its address goes.
        assert log.image(old_answered.id) is not None and log.prediction(old_answered.id)["feedback"] == "confirmed"
    assert len(stored_clients(path)) == 3  # the rows stay, for the Monitor's numbers


def test_without_an_age_retention_the_addresses_stay(tmp_path):
    path = tmp_path / "predictions.sqlite"
    old = record(client="203.0.113.9", age_days=400)
    with PredictionLog(path) as log:  # thumbnail_retention_days=None: thumbnails go by count only
        log.log(old)
        assert log.flush()
        assert log.prediction(old.id)["client"] == "203.0.113.9"
