"""Model registry: immutable, numbered model versions and the aliases that point at them.

A version is a folder written by `model.save_pretrained(folder)` (config.json with `id2label`,
model.safetensors, maybe preprocessor_config.json) plus README.md (the model card), optionally
metrics.json, and the registry-owned `classifr_version.json`:
`{"version", "parent", "created_at", "num_labels", "metadata"}`, and `checksums.json` (the sha256 of
every other file, `classifr.versions.folder`), both written when the version is committed.

Versions are named v1, v2, ... in publish order; a number is never handed out twice, even when a
publish crashes. Published versions are read-only in spirit: nothing in Classifr rewrites them,
and callers must not edit the folder `local_path` returns (files are not chmod-ed; that would
only get in the way of cleaning up a registry by hand). The aliases `production` and `candidate`
point at versions and remember their earlier targets so `rollback` can step back; the reference
`latest` always means the highest version.

Two back ends share one interface (`ModelRegistry`):

- `LocalRegistry(root)`: `versions/vN/` (published), `.staging/<host>_<pid>_<token>/` (being
  written), `aliases.json`, `next_version` (the persisted counter) and `.lock` (a FileLock taken
  for every mutation, so several processes may publish at once). A version appears by one
  `os.rename` of a complete, fsync-ed folder, so a reader sees all of it or nothing. Staging
  folders left by crashed publishers are removed at the start of the next publish when their
  owner process (same host) is gone, or when they are older than an hour (other hosts on a shared
  disk, recycled pids). POSIX only: it relies on atomic rename and fsync of directories.
- `HubRegistry(repo_id, cache_dir=...)`: one Hub commit per version on `main` (which therefore
  holds exactly the latest version's files, plus `classifr_registry.json` and the Hub's
  `.gitattributes`) and a tag `vN` on that commit. Aliases live in `classifr_registry.json` on
  `main`. Every commit passes `parent_commit`, so a concurrent writer makes it fail instead of
  being overwritten; the registry then re-reads the head and retries once, and raises
  RegistryError if the head moved again.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from huggingface_hub import CommitInfo, CommitOperation, CommitOperationAdd, CommitOperationDelete, GitRefs, HfApi
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError

from classifr.core.errors import ClassifrError, ConfigError, RegistryError, VersionNotFoundError
from classifr.core.storage import fsync_dir, fsync_path
from classifr.versions.folder import CHECKSUMS_FILE, CONFIG_FILE, VERSION_FILE, checksum, checksums_json, file_checksums, num_labels


logger = logging.getLogger(__name__)

ALIASES = ("production", "candidate")
LATEST = "latest"
REGISTRY_FILE = "classifr_registry.json"  # HubRegistry's aliases and history, on `main`

_VERSION_NAME = re.compile(r"^v(\d+)$")
_STAGING_MAX_AGE_S = 3600.0
_HUB_BRANCH = "main"
_HUB_KEEP = frozenset({REGISTRY_FILE, ".gitattributes"})  # on main, not part of any version
_RECORD_FILES = frozenset({VERSION_FILE, CHECKSUMS_FILE})  # written by the registry at commit, never by write()
_HUB_COMMIT_ATTEMPTS = 2  # a stale parent_commit is retried once
_HUB_CONFLICT_STATUS = frozenset({409, 412})  # how the Hub answers a stale parent_commit

WriteVersion = Callable[[Path], None]
# Given main's refs: the commit's operations (none: nothing to change), its message, and a result.
_PrepareCommit = Callable[[GitRefs], "tuple[list[CommitOperation], str, Any]"]


@dataclass(frozen=True)
class VersionInfo:
    """One published version as listed by the registry (aliases as of the listing)."""

    version: str
    parent: str | None
    created_at: str
    num_labels: int
    aliases: tuple[str, ...] = ()
    # Free-form and unhashable, so it takes no part in equality or hashing.
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "aliases": list(self.aliases),
            "num_labels": self.num_labels,
            "parent": self.parent,
            "created_at": self.created_at,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class _AliasState:
    """Alias targets plus each alias's targets over time (oldest first, the last one current)."""

    aliases: Mapping[str, str] = field(default_factory=dict)
    history: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, *, source: str) -> _AliasState:
        try:
            aliases = {str(k): str(v) for k, v in data.get("aliases", {}).items()}
            history = {str(k): tuple(str(v) for v in vs) for k, vs in data.get("history", {}).items()}
        except (AttributeError, TypeError) as err:
            raise RegistryError(f"{source} is malformed: {err}") from err
        return cls(aliases, history)

    def to_json(self) -> dict[str, Any]:
        return {"aliases": dict(self.aliases), "history": {k: list(v) for k, v in self.history.items()}}

    def aliases_of(self, version: str) -> tuple[str, ...]:
        return tuple(alias for alias in ALIASES if self.aliases.get(alias) == version)

    def pointed(self, alias: str, version: str) -> _AliasState:
        """`alias` -> `version`; unchanged (no new history entry) if it already points there."""
        current = self.aliases.get(alias)
        if current == version:
            return self
        # A hand-edited file may set an alias without history; keep its target rollback-able.
        past = self.history.get(alias) or ((current,) if current else ())
        return _AliasState({**self.aliases, alias: version}, {**self.history, alias: (*past, version)})

    def rolled_back(self, alias: str) -> _AliasState:
        past = self.history.get(alias, ())
        if len(past) < 2:
            raise RegistryError(f"cannot roll back {alias!r}: it has no earlier version (history: {list(past)})")
        past = past[:-1]
        return _AliasState({**self.aliases, alias: past[-1]}, {**self.history, alias: past})


@dataclass(frozen=True)
class _View:
    """What a registry holds at one moment: versions (ascending) with a back-end handle, and aliases."""

    versions: Mapping[str, str]  # "v3" -> folder path (local) or tag commit oid (Hub)
    aliases: _AliasState


class ModelRegistry(abc.ABC):
    """Numbered, immutable model versions plus the aliases `production` and `candidate`."""

    # -- back-end hooks ---------------------------------------------------------------------

    @abc.abstractmethod
    def _view(self) -> _View:
        """The published versions (ascending by number) and the alias state."""

    @abc.abstractmethod
    def _read_record(self, version: str, handle: str) -> Mapping[str, Any]:
        """The parsed classifr_version.json of one published version."""

    @abc.abstractmethod
    def _materialize(self, version: str, handle: str) -> Path:
        """A local folder holding the version's files."""

    @abc.abstractmethod
    def _update_aliases(self, change: Callable[[_AliasState], _AliasState]) -> _AliasState:
        """Apply `change` to the current alias state atomically; return the new state."""

    @abc.abstractmethod
    def _commit_version(self, write: WriteVersion, *, parent: str | None, metadata: dict[str, Any]) -> str:
        """Stage write()'s files, add classifr_version.json and checksums.json, make the version visible;
        return its name."""

    # -- public API -------------------------------------------------------------------------

    def list_versions(self) -> list[VersionInfo]:
        view = self._view()
        return [self._info(version, handle, view) for version, handle in view.versions.items()]

    def is_empty(self) -> bool:
        return not self._view().versions

    def resolve(self, ref: str) -> str:
        """"v3" | "production" | "candidate" | "latest" -> "v3"; VersionNotFoundError otherwise."""
        return _resolve_in(ref, self._view())

    def get(self, ref: str) -> VersionInfo:
        view = self._view()
        version = _resolve_in(ref, view)
        return self._info(version, view.versions[version], view)

    def local_path(self, ref: str) -> Path:
        view = self._view()
        version = _resolve_in(ref, view)
        return self._materialize(version, view.versions[version])

    def publish(
        self,
        write: WriteVersion,
        *,
        parent: str | None,
        metadata: dict[str, Any] | None = None,
        aliases: Sequence[str] = (),
    ) -> VersionInfo:
        """Publish the files write(folder) writes as the next version, then point `aliases` at it.

        write() gets an empty folder and writes the save_pretrained files and README.md (and maybe
        metrics.json); the registry adds classifr_version.json and checksums.json (replacing any
        that write() copied). If write() raises, nothing is published and the error propagates unchanged.
        """
        aliases = tuple(dict.fromkeys(_check_alias(alias) for alias in aliases))
        metadata = _checked_metadata(metadata)
        # Checked before write() runs, which may be slow; stored resolved so lineage never drifts.
        parent_version = self.resolve(parent) if parent is not None else None
        version = self._commit_version(write, parent=parent_version, metadata=metadata)
        logger.info("published %s (parent %s)", version, parent_version)
        if aliases:
            self._update_aliases(lambda state: _point_all(state, aliases, version))
            logger.info("%s -> %s", ", ".join(aliases), version)
        return self.get(version)

    def promote(self, ref: str, alias: str = "production") -> VersionInfo:
        """Point `alias` at `ref`; the previous target is remembered for rollback."""
        _check_alias(alias)
        version = self.resolve(ref)
        self._update_aliases(lambda state: state.pointed(alias, version))
        logger.info("%s -> %s", alias, version)
        return self.get(version)

    def rollback(self, alias: str = "production") -> VersionInfo:
        """Point `alias` back at its previous target; RegistryError if it has none."""
        _check_alias(alias)
        state = self._update_aliases(lambda state: state.rolled_back(alias))
        version = state.aliases[alias]
        logger.info("%s rolled back to %s", alias, version)
        return self.get(version)

    def rollback_target(self, alias: str = "production") -> str:
        """The version `rollback(alias)` would point at now; RegistryError if it has none."""
        _check_alias(alias)
        return self._view().aliases.rolled_back(alias).aliases[alias]

    def alias_history(self, alias: str = "production") -> list[str]:
        """The versions `alias` has pointed at, oldest first; the last one is the current target."""
        _check_alias(alias)
        return list(self._view().aliases.history.get(alias, ()))

    # -- shared helpers ---------------------------------------------------------------------

    def _info(self, version: str, handle: str, view: _View) -> VersionInfo:
        record = self._read_record(version, handle)
        try:
            return VersionInfo(
                version=version,
                parent=record["parent"],
                created_at=str(record["created_at"]),
                num_labels=int(record["num_labels"]),
                aliases=view.aliases.aliases_of(version),
                metadata=dict(record.get("metadata") or {}),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise RegistryError(f"{version}: {VERSION_FILE} is malformed ({err!r})") from err


class LocalRegistry(ModelRegistry):
    """A registry in a folder on a local (POSIX) file system; see the module docstring for the layout."""

    def __init__(self, root: Path | str, *, lock_timeout_s: float = 60.0) -> None:
        self.root = Path(root)
        self.lock_timeout_s = lock_timeout_s

    @property
    def _versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def _staging_root(self) -> Path:
        return self.root / ".staging"

    @property
    def _aliases_file(self) -> Path:
        return self.root / "aliases.json"

    @property
    def _counter_file(self) -> Path:
        return self.root / "next_version"

    def _view(self) -> _View:
        versions = {
            folder.name: str(folder)
            for folder in _numbered_entries(self._versions_dir)
            if (folder / VERSION_FILE).is_file()  # half-moved or hand-made folders are not versions
        }
        return _View(versions, self._read_aliases())

    def _read_record(self, version: str, handle: str) -> Mapping[str, Any]:
        return _read_json(Path(handle) / VERSION_FILE)

    def _materialize(self, version: str, handle: str) -> Path:
        return Path(handle)

    def _update_aliases(self, change: Callable[[_AliasState], _AliasState]) -> _AliasState:
        with self._locked():
            state = self._read_aliases()
            new_state = change(state)
            if new_state != state:
                self._write_aliases(new_state)
        return new_state

    def _commit_version(self, write: WriteVersion, *, parent: str | None, metadata: dict[str, Any]) -> str:
        self._remove_abandoned_staging()
        staging = self._new_staging_dir()
        try:
            num_labels = _stage(write, staging)
            hashes = file_checksums(staging)  # outside the lock: hashing the weights takes a while
            _fsync_tree(staging)  # durable before it can become visible
            with self._locked():
                version = f"v{self._claim_number()}"
                record = _json_bytes(_version_record(version, parent=parent, num_labels=num_labels, metadata=metadata))
                _replace_durably(staging / VERSION_FILE, record)
                _replace_durably(staging / CHECKSUMS_FILE, _checksums(hashes, record))
                os.rename(staging, self._versions_dir / version)  # the commit point
                fsync_dir(self._versions_dir)
                fsync_dir(self._staging_root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return version

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / ".lock"), timeout=self.lock_timeout_s)
        try:
            lock.acquire()
        except Timeout as err:
            raise RegistryError(f"timed out after {self.lock_timeout_s}s waiting for {lock.lock_file}") from err
        try:
            yield
        finally:
            lock.release()

    def _read_aliases(self) -> _AliasState:
        if not self._aliases_file.is_file():
            return _AliasState()
        return _AliasState.from_json(_read_json(self._aliases_file), source=str(self._aliases_file))

    def _write_aliases(self, state: _AliasState) -> None:
        _replace_durably(self._aliases_file, _json_bytes(state.to_json()))

    def _claim_number(self) -> int:
        """The next version number; call under the lock. Persisted first, so a crash burns it."""
        # Every v<digits> entry counts, even one without a record, so rename never lands on it.
        highest = max((_version_number(e.name) or 0 for e in _numbered_entries(self._versions_dir)), default=0)
        number = max(highest + 1, self._read_counter())
        self._versions_dir.mkdir(parents=True, exist_ok=True)
        _replace_durably(self._counter_file, f"{number + 1}\n".encode())
        return number

    def _read_counter(self) -> int:
        if not self._counter_file.is_file():
            return 1
        raw = self._counter_file.read_text(encoding="utf-8").strip()
        try:
            return int(raw)
        except ValueError:
            raise RegistryError(f"{self._counter_file} must hold an integer, got {raw!r}") from None

    def _new_staging_dir(self) -> Path:
        # host and pid in the name tell a later publisher whether the owner can still be running.
        self._staging_root.mkdir(parents=True, exist_ok=True)
        folder = self._staging_root / f"{socket.gethostname()}_{os.getpid()}_{secrets.token_hex(6)}"
        folder.mkdir()
        return folder

    def _remove_abandoned_staging(self) -> None:
        if not self._staging_root.is_dir():
            return
        for folder in self._staging_root.iterdir():
            if _is_abandoned(folder):
                logger.info("removing abandoned staging folder %s", folder)
                shutil.rmtree(folder, ignore_errors=True)


class HubRegistry(ModelRegistry):
    """A registry in a Hugging Face Hub repository; see the module docstring for the layout."""

    def __init__(
        self,
        repo_id: str,
        *,
        hf_api: HfApi | None = None,
        token: str | None = None,
        cache_dir: Path | str,
        repo_type: str = "model",
    ) -> None:
        self.repo_id = repo_id
        self.hf_api = hf_api if hf_api is not None else HfApi(token=token)
        self.cache_dir = Path(cache_dir)
        self.repo_type = repo_type

    def _view(self) -> _View:
        with self._hub_errors("list the versions"):
            refs = self._refs()
            if refs is None:  # created on first publish
                return _View({}, _AliasState())
            tags = sorted(
                (tag for tag in refs.tags if _version_number(tag.name) is not None),
                key=lambda tag: _version_number(tag.name) or 0,
            )
            return _View({tag.name: tag.target_commit for tag in tags}, self._aliases_at(_head(refs)))

    def _read_record(self, version: str, handle: str) -> Mapping[str, Any]:
        with self._hub_errors(f"read {version}"):
            return _read_json(Path(self._download(VERSION_FILE, revision=handle)))

    def _materialize(self, version: str, handle: str) -> Path:
        # Pinned to the tag's commit, so a moved or re-created tag cannot change what was loaded.
        with self._hub_errors(f"download {version}"):
            folder = self.hf_api.snapshot_download(
                self.repo_id, repo_type=self.repo_type, revision=handle, cache_dir=self.cache_dir
            )
        return Path(folder)

    def _update_aliases(self, change: Callable[[_AliasState], _AliasState]) -> _AliasState:
        def prepare(refs: GitRefs) -> tuple[list[CommitOperation], str, _AliasState]:
            state = self._aliases_at(_head(refs))
            new_state = change(state)
            if new_state == state:
                return [], "", state
            operation = CommitOperationAdd(REGISTRY_FILE, _json_bytes(new_state.to_json()))
            return [operation], "Update Classifr aliases", new_state

        _, new_state = self._commit_on_head("update the aliases", prepare)
        return new_state

    def _commit_version(self, write: WriteVersion, *, parent: str | None, metadata: dict[str, Any]) -> str:
        with tempfile.TemporaryDirectory(prefix="classifr-publish-") as tmp:
            staging = Path(tmp)
            num_labels = _stage(write, staging)
            files = _files_to_upload(staging)
            hashes = {name: digest for name, digest in file_checksums(staging).items() if name in files}
            self._ensure_repo()

            def prepare(refs: GitRefs) -> tuple[list[CommitOperation], str, str]:
                head = _head(refs)
                on_main = self._list_files(head)
                version = f"v{self._next_number(refs, head, on_main)}"
                record = _json_bytes(_version_record(version, parent=parent, num_labels=num_labels, metadata=metadata))
                adds = [CommitOperationAdd(name, str(path)) for name, path in files.items()]
                adds.append(CommitOperationAdd(VERSION_FILE, record))
                adds.append(CommitOperationAdd(CHECKSUMS_FILE, _checksums(hashes, record)))
                # main holds only the newest version: drop the previous version's extra files.
                deletes = [
                    CommitOperationDelete(name)
                    for name in on_main
                    if name not in files and name not in _RECORD_FILES and name not in _HUB_KEEP
                ]
                return [*adds, *deletes], f"Publish {version}", version

            commit, version = self._commit_on_head("publish a version", prepare)
        assert commit is not None  # a version always has files to add
        with self._hub_errors(f"tag {version}"):
            self.hf_api.create_tag(self.repo_id, tag=version, revision=commit.oid, repo_type=self.repo_type)
        return version

    def _commit_on_head(self, action: str, prepare: _PrepareCommit) -> tuple[CommitInfo | None, Any]:
        """Commit prepare(refs)'s operations on top of the head it saw; retry once if the head moved.

        Returns the commit (None when there was nothing to commit) and prepare's result.
        """
        for attempt in range(1, _HUB_COMMIT_ATTEMPTS + 1):
            with self._hub_errors(action):
                # A missing repo reads as empty, so e.g. rollback reports "no history", not a 404.
                refs = self._refs() or GitRefs(branches=[], converts=[], tags=[])
                operations, message, result = prepare(refs)
                if not operations:
                    return None, result
                try:
                    commit = self.hf_api.create_commit(
                        self.repo_id,
                        operations,
                        commit_message=message,
                        parent_commit=_head(refs),
                        repo_type=self.repo_type,
                    )
                    return commit, result
                except HfHubHTTPError as err:
                    if not _is_conflict(err):
                        raise
                    if attempt == _HUB_COMMIT_ATTEMPTS:
                        raise RegistryError(
                            f"could not {action} in Hub repository {self.repo_id}: it changed concurrently "
                            f"{attempt} times in a row; try again"
                        ) from err
                    logger.warning("%s changed while trying to %s; retrying on the new head", self.repo_id, action)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _refs(self) -> GitRefs | None:
        """The repo's GitRefs, or None if the repository does not exist yet."""
        try:
            return self.hf_api.list_repo_refs(self.repo_id, repo_type=self.repo_type)
        except RepositoryNotFoundError:
            return None

    def _ensure_repo(self) -> None:
        with self._hub_errors("create the repository"):
            if self._refs() is None:
                self.hf_api.create_repo(self.repo_id, repo_type=self.repo_type, exist_ok=True)
                logger.info("created Hub repository %s", self.repo_id)

    def _aliases_at(self, head: str | None) -> _AliasState:
        if head is None:
            return _AliasState()
        try:
            path = self._download(REGISTRY_FILE, revision=head)
        except RemoteEntryNotFoundError:  # no alias set yet (not: offline and not cached)
            return _AliasState()
        return _AliasState.from_json(_read_json(Path(path)), source=f"{self.repo_id}/{REGISTRY_FILE}@{head}")

    def _list_files(self, head: str | None) -> list[str]:
        if head is None:
            return []
        return list(self.hf_api.list_repo_files(self.repo_id, revision=head, repo_type=self.repo_type))

    def _next_number(self, refs: GitRefs, head: str | None, on_main: list[str]) -> int:
        """1 + the highest of the v-tags and the version on main's head.

        main's head counts because a publisher that died between its commit and its tag left a
        version there that nobody can see; its number must not be handed out again.
        """
        numbers = [_version_number(tag.name) or 0 for tag in refs.tags]
        if head is not None and VERSION_FILE in on_main:
            record = _read_json(Path(self._download(VERSION_FILE, revision=head)))
            numbers.append(_version_number(str(record.get("version", ""))) or 0)
        return max(numbers, default=0) + 1

    def _download(self, filename: str, *, revision: str) -> str:
        return self.hf_api.hf_hub_download(
            self.repo_id, filename, repo_type=self.repo_type, revision=revision, cache_dir=self.cache_dir
        )

    @contextlib.contextmanager
    def _hub_errors(self, action: str) -> Iterator[None]:
        """Turn Hub and network failures into one-line RegistryErrors naming the repository."""
        try:
            yield
        except ClassifrError:
            raise
        except OSError as err:  # HfHubHTTPError, offline mode, missing cache entries
            raise RegistryError(f"could not {action} in Hub repository {self.repo_id}: {_one_line(err)}") from err


# -- pure helpers -------------------------------------------------------------------------------


def _version_number(name: str) -> int | None:
    match = _VERSION_NAME.match(name)
    return int(match.group(1)) if match else None


def _check_alias(alias: str) -> str:
    if alias not in ALIASES:
        raise ConfigError(f"unknown alias {alias!r}; aliases are {', '.join(ALIASES)}")
    return alias


def _checked_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ConfigError(f"metadata must be a dict, got {type(metadata).__name__}: {metadata!r}")
    try:
        # A JSON round trip both validates and copies, so what publish returns equals what is stored.
        return json.loads(json.dumps(metadata))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"metadata must be JSON-serializable: {err} in {metadata!r}") from err


def _point_all(state: _AliasState, aliases: Sequence[str], version: str) -> _AliasState:
    for alias in aliases:
        state = state.pointed(alias, version)
    return state


def _resolve_in(ref: str, view: _View) -> str:
    versions = list(view.versions)
    if ref == LATEST:
        if not versions:
            raise VersionNotFoundError(f"no version for {ref!r}: the registry is empty")
        return versions[-1]
    if ref in ALIASES:
        target = view.aliases.aliases.get(ref)
        if target is None:
            raise VersionNotFoundError(f"alias {ref!r} is not set; {_describe(view)}")
        if target not in view.versions:
            raise RegistryError(f"alias {ref!r} points at {target!r}, which does not exist; {_describe(view)}")
        return target
    if ref in view.versions:
        return ref
    raise VersionNotFoundError(f"unknown model version {ref!r}; {_describe(view)}")


def _describe(view: _View) -> str:
    if not view.versions:
        return "the registry is empty"
    aliases = [f"{alias} -> {view.aliases.aliases[alias]}" for alias in ALIASES if alias in view.aliases.aliases]
    text = f"versions: {', '.join(view.versions)}"
    return text + (f"; aliases: {', '.join(aliases)}" if aliases else "")


def _stage(write: WriteVersion, folder: Path) -> int:
    """Run write(folder), check it wrote a model config, and return the number of labels."""
    write(folder)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        written = sorted(p.name for p in folder.iterdir())
        raise RegistryError(f"the version has no {CONFIG_FILE}; write() wrote {written}")
    return num_labels(_read_json(config_path))


def _version_record(version: str, *, parent: str | None, num_labels: int, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": version,
        "parent": parent,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "num_labels": num_labels,
        "metadata": metadata,
    }


def _files_to_upload(folder: Path) -> dict[str, Path]:
    """The written files by repo path, minus the ones the registry owns on main."""
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if not path.is_file() or name in _RECORD_FILES:
            continue
        if name in _HUB_KEEP:  # e.g. a folder copied from a Hub snapshot; must not clobber main's
            logger.warning("not uploading %s: the registry owns it", name)
            continue
        files[name] = path
    return files


def _head(refs: GitRefs) -> str | None:
    return next((branch.target_commit for branch in refs.branches if branch.name == _HUB_BRANCH), None)


def _is_conflict(err: HfHubHTTPError) -> bool:
    response = getattr(err, "response", None)
    return response is not None and response.status_code in _HUB_CONFLICT_STATUS


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RegistryError(f"cannot read {path}: {err}") from err


def _checksums(hashes: Mapping[str, str], record: bytes) -> bytes:
    """checksums.json: the staged files (any copied record files replaced) plus the version's own record."""
    files = {name: digest for name, digest in hashes.items() if name not in _RECORD_FILES}
    return checksums_json({**files, VERSION_FILE: checksum(record)})


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _numbered_entries(folder: Path) -> list[Path]:
    """Entries named v<digits> in `folder`, ascending by number (none if it does not exist)."""
    if not folder.is_dir():
        return []
    entries = [entry for entry in folder.iterdir() if _version_number(entry.name) is not None]
    return sorted(entries, key=lambda entry: _version_number(entry.name) or 0)


def _is_abandoned(folder: Path) -> bool:
    """A staging folder whose publisher is gone: same host and dead pid, or older than an hour."""
    host, _, rest = folder.name.rpartition("_")[0].rpartition("_")
    pid = int(rest) if rest.isdigit() else None
    if host == socket.gethostname() and pid is not None and not _pid_alive(pid):
        return True
    try:
        age = time.time() - folder.stat().st_mtime
    except FileNotFoundError:  # another publisher cleaned it up meanwhile
        return False
    return age > _STAGING_MAX_AGE_S


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _replace_durably(path: Path, data: bytes) -> None:
    """Write `path` so that readers and a crash see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fsync_path(path)
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(folder)

