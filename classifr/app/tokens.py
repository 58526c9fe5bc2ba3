"""API tokens for maintainer operations over HTTP (docs/cli.md#token, docs/api.md).

The one module that reads and writes `CLASSIFR_HOME/api_tokens.json`:

    {"tokens": [{"name", "prefix", "sha256", "created_at", "revoked_at"}, ...]}

Only a token's SHA-256 is stored (and its first 8 characters, to tell tokens apart in a list).
`classifr token create/revoke` changes the file from another process while the app serves:
`verify` re-reads it whenever its identity (inode, mtime, size) changed, so a new or revoked token
counts from the app's next request, without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from classifr.core.errors import TokenError
from classifr.core.storage import write_file_atomically

logger = logging.getLogger(__name__)

TOKENS_FILE = "api_tokens.json"
LOCK_FILE = "api_tokens.json.lock"
TOKEN_PREFIX = "cfr_"
PREFIX_CHARS = 8  # "cfr_" and 4 random characters: enough to tell tokens apart, far too few to guess one
LOCK_TIMEOUT_S = 10.0
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created_at: str  # ISO-8601 UTC
    revoked_at: str | None
    prefix: str  # the token's first 8 characters, e.g. "cfr_AbC1"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "prefix": self.prefix, "created_at": self.created_at, "revoked_at": self.revoked_at}


def hash_token(token: str) -> str:
    # A plain SHA-256 is right here, not a slow password hash: a token carries 256 random bits
    # (secrets.token_urlsafe(32)), so nobody can guess it from its hash however fast the hash is.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TokenError(f"a token name is 1-64 characters of letters, digits, '.', '_' or '-', got {name!r}")
    return name


class TokenStore:
    """The API tokens of one project; safe from many threads and processes at once."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.path = self.home / TOKENS_FILE
        self._lock_path = self.home / LOCK_FILE
        self._cache_lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) of the file last read
        self._active: list[tuple[str, str]] = []  # (sha256, name) of the tokens not revoked

    def create(self, name: str) -> str:
        """A new token named `name`; returned only here, the file keeps only its hash."""
        validate_name(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._file_lock():
            rows = self._read_rows()
            if any(row["name"] == name and row["revoked_at"] is None for row in rows):
                raise TokenError(f"a token named {name!r} exists already; revoke it first")
            rows.append({
                "name": name,
                "prefix": token[:PREFIX_CHARS],
                "sha256": hash_token(token),
                "created_at": _now(),
                "revoked_at": None,
            })
            self._write_rows(rows)
        logger.info("API token %r created", name)
        return token

    def list(self) -> list[TokenInfo]:
        """Every token, oldest first, revoked ones included."""
        return [_info(row) for row in self._read_rows()]

    def revoke(self, name: str) -> TokenInfo:
        """Revoke the active token named `name`; TokenError when there is none."""
        validate_name(name)
        with self._file_lock():
            rows = self._read_rows()
            row = next((row for row in rows if row["name"] == name and row["revoked_at"] is None), None)
            if row is None:
                if any(row["name"] == name for row in rows):
                    raise TokenError(f"the token named {name!r} is revoked already")
                raise TokenError(f"no token named {name!r}")
            row["revoked_at"] = _now()
            self._write_rows(rows)
        logger.info("API token %r revoked", name)
        return _info(row)

    def verify(self, token: str | None) -> str | None:
        """The name of `token` when it is a token of this project and not revoked, else None.

        One `stat` per call; the file is re-read only when it changed. A corrupt file raises
        TokenError (naming it) rather than letting every token through or none silently."""
        if not isinstance(token, str) or not token:
            return None
        digest = hash_token(token)
        with self._cache_lock:
            self._refresh()
            found = None
            for stored, name in self._active:  # every entry compared, in constant time each
                if hmac.compare_digest(stored, digest):
                    found = name
            return found

    def _refresh(self) -> None:
        try:
            signature = _signature(os.stat(self.path))
        except FileNotFoundError:
            self._signature, self._active = None, []
            return
        except OSError as err:
            raise TokenError(f"cannot read the tokens file {str(self.path)!r}: {err.strerror or err}") from err
        if signature == self._signature:
            return
        # Read and stat the same open file, so the cache never pairs one version's rows with
        # another's signature when a write replaces the file meanwhile.
        text, signature = self._read_text()
        rows = self._parse(text) if text is not None else []
        self._active = [(row["sha256"], row["name"]) for row in rows if row["revoked_at"] is None]
        self._signature = signature

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Held around every read-modify-write, so two processes creating at once both count."""
        self.home.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self._lock_path), timeout=LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout as err:
            raise TokenError(f"the tokens file {str(self.path)!r} stayed locked by another process for {LOCK_TIMEOUT_S:.0f} s") from err
        try:
            yield
        finally:
            lock.release()

    def _read_text(self) -> tuple[str | None, tuple[int, int, int] | None]:
        try:
            with open(self.path, "rb") as file:
                signature = _signature(os.fstat(file.fileno()))
                data = file.read()
        except FileNotFoundError:
            return None, None
        except OSError as err:
            raise TokenError(f"cannot read the tokens file {str(self.path)!r}: {err.strerror or err}") from err
        try:
            return data.decode("utf-8"), signature
        except UnicodeDecodeError as err:
            raise TokenError(f"the tokens file {str(self.path)!r} is corrupt: not UTF-8 text") from err

    def _read_rows(self) -> list[dict[str, Any]]:
        text, _ = self._read_text()
        return [] if text is None else self._parse(text)

    def _parse(self, text: str) -> list[dict[str, Any]]:
        """The rows of the file, checked; TokenError naming the file when anything is off."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise TokenError(f"the tokens file {str(self.path)!r} is corrupt: {err.msg} at line {err.lineno}") from err
        rows = document.get("tokens") if isinstance(document, dict) else None
        if not isinstance(rows, list) or not all(_is_row(row) for row in rows):
            raise TokenError(f"the tokens file {str(self.path)!r} is corrupt: expected {{\"tokens\": [...]}} with a name, prefix, sha256, created_at and revoked_at per token")
        return rows

    def _write_rows(self, rows: list[dict[str, Any]]) -> None:
        # mkstemp creates the temporary file readable by its owner only (0600), and the rename
        # keeps that mode: the hashes are nobody else's business.
        data = (json.dumps({"tokens": rows}, indent=2) + "\n").encode("utf-8")
        write_file_atomically(self.path, data, self.home, what="the API tokens")


def _is_row(row: object) -> bool:
    return (
        isinstance(row, dict)
        and isinstance(row.get("name"), str)
        and isinstance(row.get("prefix"), str)
        and isinstance(row.get("sha256"), str)
        and bool(_SHA256_HEX.fullmatch(row["sha256"]))
        and isinstance(row.get("created_at"), str)
        and (row.get("revoked_at") is None or isinstance(row.get("revoked_at"), str))
    )


def _info(row: dict[str, Any]) -> TokenInfo:
    return TokenInfo(name=row["name"], created_at=row["created_at"], revoked_at=row.get("revoked_at"), prefix=row["prefix"])


def _signature(stat: os.stat_result) -> tuple[int, int, int]:
    # The inode too: every write replaces the file, so a change within the clock's resolution
    # that keeps the size still gives a new inode.
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
