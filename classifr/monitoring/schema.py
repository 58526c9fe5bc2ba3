"""The prediction log's SQLite schema, and the one place that opens its file.

* One SQLite file in WAL mode (`synchronous=NORMAL`): readers never wait for the writer and the
  writer never waits for readers; a power cut can lose the last transactions, never corrupt the file.
* The tables and their indexes (`SCHEMA`, versioned by `PRAGMA user_version`), the columns the
  writer inserts (`PREDICTION_COLUMNS`, `INSERT_PREDICTION_SQL`), and the two ways to open the file:
  `_open_for_writing` (creates the schema, refuses a newer one) for the writer thread of
  classifr.monitoring.log, `_open_for_reading` for each query of classifr.monitoring.queries.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from classifr.monitoring.records import PredictionLogError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
READ_TIMEOUT_S = 30.0

# Columns of `predictions` written by the writer (and by tests that build large logs directly).
PREDICTION_COLUMNS = (
    "id", "time", "version", "variant", "source", "label", "score", "topk", "latency_ms",
    "image_sha256", "width", "height", "nbytes", "embedding", "client",
)  # fmt: skip
INSERT_PREDICTION_SQL = (
    f"INSERT OR IGNORE INTO predictions ({', '.join(PREDICTION_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(PREDICTION_COLUMNS))})"
)
# An image is stored only with a prediction inserted by this very batch (rowid above the batch's
# start), so a duplicate id can never attach a new image to an old row.
_INSERT_IMAGE_SQL = (
    "INSERT OR IGNORE INTO images (prediction_id, jpeg) "
    "SELECT ?1, ?2 WHERE (SELECT rowid FROM predictions WHERE id = ?1) > ?3"
)
# Columns the aggregate queries read; both window indexes carry them all (covering indexes).
_COVERED = "score, latency_ms, feedback, variant, source, label"

# Answers that differ from the first one given for the same photo (the prediction rows keep the
# first): for maintainers to review. Created on every open for writing, so logs written before it
# existed gain it without a schema version change.
FEEDBACK_CONFLICTS_TABLE = """CREATE TABLE IF NOT EXISTS feedback_conflicts (
    prediction_id TEXT NOT NULL,      -- the prediction the later answer named
    image_sha256 TEXT NOT NULL,
    kept_label TEXT NOT NULL,         -- the earlier answer, which stays on the prediction rows
    label TEXT NOT NULL,              -- the later, different answer
    kind TEXT NOT NULL,               -- 'confirmed' or 'corrected'
    time REAL NOT NULL
)"""

# The caller's address (API predictions), added after schema version 1 was released: every open
# for writing adds the column to a log that lacks it (NULL in the rows it has), without a schema
# version change. Readers of such a log before that open see no such column (`_has_column`).
CLIENT_COLUMN = "ALTER TABLE predictions ADD COLUMN client TEXT"
# The rows that still hold an address, for its age retention (the last days' API calls only).
CLIENT_INDEX = "CREATE INDEX IF NOT EXISTS predictions_client ON predictions (time) WHERE client IS NOT NULL"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS predictions (
        id TEXT PRIMARY KEY,
        time REAL NOT NULL,
        version TEXT NOT NULL,
        variant TEXT NOT NULL,
        source TEXT NOT NULL,
        label TEXT NOT NULL,          -- top-1
        score REAL NOT NULL,          -- top-1
        topk TEXT NOT NULL,           -- JSON [[label, score], ...], best first
        latency_ms REAL NOT NULL,
        image_sha256 TEXT NOT NULL,
        width INTEGER,
        height INTEGER,
        nbytes INTEGER,
        embedding BLOB,               -- float16 bytes, NULL once older than max_embeddings
        feedback TEXT,                -- NULL, 'confirmed' or 'corrected'
        true_label TEXT,
        feedback_time REAL,
        client TEXT                   -- the caller's address (API), NULL once older than the thumbnail retention
    )""",
    "CREATE TABLE IF NOT EXISTS images (prediction_id TEXT PRIMARY KEY, jpeg BLOB NOT NULL)",
    # Time windows over all versions: summary, volume, labels, histogram, scores.
    f"CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time, version, {_COVERED})",
    # The same for one version, and summary's GROUP BY version without a sort.
    f"CREATE INDEX IF NOT EXISTS predictions_version_time ON predictions (version, time, {_COVERED})",
    # Feedback by image hash goes to the most recent prediction of that image.
    "CREATE INDEX IF NOT EXISTS predictions_image ON predictions (image_sha256, time)",
    # Galleries (newest feedback first) and the feedback confusion read only rows with feedback.
    "CREATE INDEX IF NOT EXISTS predictions_feedback ON predictions (feedback, feedback_time) "
    "WHERE feedback IS NOT NULL",
    # The newest rows that still have an embedding (retention keeps them few).
    "CREATE INDEX IF NOT EXISTS predictions_embedding ON predictions (time) WHERE embedding IS NOT NULL",
)


def _open_for_writing(path: Path) -> sqlite3.Connection:
    """Open the log, create the schema in an empty file, refuse a newer schema."""
    try:
        conn = sqlite3.connect(path, timeout=READ_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as err:
        raise PredictionLogError(f"cannot open the prediction log {path}: {err}") from err
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":  # e.g. a network file system: still correct, readers may wait
            logger.warning("prediction log %s: journal mode is %r, not WAL", path, mode)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")  # two processes opening a new file: one creates the schema
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found == 0:
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if found in (0, SCHEMA_VERSION):
            conn.execute(FEEDBACK_CONFLICTS_TABLE)
            if not _has_column(conn, "predictions", "client"):
                conn.execute(CLIENT_COLUMN)
            conn.execute(CLIENT_INDEX)
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as err:
        _rollback(conn)
        conn.close()
        raise PredictionLogError(f"cannot open the prediction log {path}: {err}") from err
    if found != 0 and found != SCHEMA_VERSION:
        conn.close()
        raise PredictionLogError(
            f"the prediction log {path} has schema version {found}; this Classifr reads version "
            f"{SCHEMA_VERSION} only (upgrade Classifr, or point it at another file)"
        )
    return conn


@contextmanager
def _open_for_reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection of its own for one query: readers never share state with the writer.
    One read transaction, so a query made of several statements sees a single snapshot."""
    conn = sqlite3.connect(path, timeout=READ_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("BEGIN")
        yield conn
    finally:
        conn.close()


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return conn.execute("SELECT 1 FROM pragma_table_info(?) WHERE name = ?", (table, column)).fetchone() is not None


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        logger.exception("rollback of the prediction log failed")
