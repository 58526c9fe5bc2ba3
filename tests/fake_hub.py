"""An in-memory Hugging Face Hub for tests: the few `HfApi` methods the registry and the dataset sync call.

Signatures mirror huggingface_hub's `HfApi` (test_registry checks that they still do), and the
return values are the library's own `CommitInfo`, `GitRefs`, `GitRefInfo` and `RepoUrl`, so shape
drift shows up here rather than against the real Hub. Errors are the library's error classes with
the status codes the Hub answers with (404 missing repo/file/revision, 409 existing tag or repo,
412 stale `parent_commit`). Downloads are written under `cache_dir/models--owner--name/snapshots/<oid>/`
like the real cache (plain files, no blob symlinks); dataset repos under `datasets--owner--name/`.

Model repos live in `repos` and dataset repos in `dataset_repos` (both keyed by repo id), so the same
id may name one of each, as on the Hub; pass `repo_type="dataset"` to the helpers for the latter.
`run_as_future` runs jobs one at a time on one worker thread, like `HfApi`'s; `close()` ends it.
`CommitOperationAdd.path_or_fileobj` may be bytes, a path or a file object (the dataset sync passes
paths and bytes); a file object is read from its start.

Every call is recorded in `calls`; `before[method_name]`, if set, runs at the start of that method
with its arguments, so a test can fail a call or make a "concurrent" writer act at that moment.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx2
from huggingface_hub import (
    CommitInfo,
    CommitOperationAdd,
    CommitOperationDelete,
    GitRefInfo,
    GitRefs,
    RepoUrl,
    constants,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import filter_repo_objects

ENDPOINT = "https://huggingface.co"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"

# The HfApi methods this fake implements; test_registry compares their signatures with HfApi's.
METHODS = (
    "create_repo",
    "create_commit",
    "create_tag",
    "list_repo_refs",
    "list_repo_files",
    "hf_hub_download",
    "snapshot_download",
    "run_as_future",
)


@dataclass(frozen=True)
class Call:
    method: str
    args: dict[str, Any]


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class FakeHfApi:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}  # model repos
        self.dataset_repos: dict[str, Repo] = {}
        self.calls: list[Call] = []
        self.before: dict[str, Callable[..., None]] = {}
        self._counter = itertools.count()
        self._pool: ThreadPoolExecutor | None = None

    # -- HfApi methods ----------------------------------------------------------------------

    def create_repo(
        self,
        repo_id: str,
        *,
        token: str | bool | None = None,
        private: bool | None = None,
        repo_type: str | None = None,
        exist_ok: bool = False,
    ) -> RepoUrl:
        self._record("create_repo", repo_id=repo_id, repo_type=repo_type, exist_ok=exist_ok)
        repos = self._repos_of(repo_type)
        if repo_id in repos:
            if not exist_ok:
                raise HfHubHTTPError(f"409 Client Error: You already created this {_kind(repo_type)} repo: {repo_id}",
                                     response=_response(409, "POST", "/api/repos/create"))
        else:
            # Like the Hub: a new repo has one commit on main holding .gitattributes.
            repo = Repo()
            repos[repo_id] = repo
            self._add_commit(repo, None, "initial commit", {".gitattributes": GITATTRIBUTES})
        return RepoUrl(_web_url(repo_id, repo_type))

    def create_commit(
        self,
        repo_id: str,
        operations: Iterable[Any],
        *,
        commit_message: str,
        commit_description: str | None = None,
        token: str | bool | None = None,
        repo_type: str | None = None,
        revision: str | None = None,
        create_pr: bool | None = None,
        num_threads: int = 5,
        parent_commit: str | None = None,
        run_as_future: bool = False,
    ) -> CommitInfo:
        operations = list(operations)
        self._record("create_commit", repo_id=repo_id, operations=operations, commit_message=commit_message,
                     repo_type=repo_type, revision=revision, parent_commit=parent_commit)
        if create_pr or run_as_future:
            raise NotImplementedError("the fake Hub does not do pull requests or futures")
        repo = self._repo(repo_id, repo_type)
        branch = revision or constants.DEFAULT_REVISION
        commit_path = f"{_api_path(repo_id, repo_type)}/commit/{branch}"
        if branch not in repo.branches:
            raise RevisionNotFoundError(f"404 Client Error: Revision Not Found: {branch}",
                                        response=_response(404, "POST", commit_path))
        head = repo.branches[branch]
        if parent_commit is not None and not head.startswith(parent_commit):
            raise HfHubHTTPError(
                "412 Client Error: Precondition Failed: A commit has happened since. Please refresh and try again.",
                response=_response(412, "POST", commit_path),
            )
        files = dict(repo.commits[head].files)
        for operation in operations:
            _apply(operation, files, commit_path)
        oid = self._add_commit(repo, head, commit_message, files, branch=branch)
        return CommitInfo(
            commit_url=f"{_web_url(repo_id, repo_type)}/commit/{oid}",
            commit_message=commit_message,
            commit_description=commit_description or "",
            oid=oid,
        )

    def create_tag(
        self,
        repo_id: str,
        *,
        tag: str,
        tag_message: str | None = None,
        revision: str | None = None,
        token: bool | str | None = None,
        repo_type: str | None = None,
        exist_ok: bool = False,
    ) -> None:
        self._record("create_tag", repo_id=repo_id, tag=tag, revision=revision, repo_type=repo_type)
        repo = self._repo(repo_id, repo_type)
        oid = self._resolve(repo_id, revision or constants.DEFAULT_REVISION, repo_type)
        if tag in repo.tags:
            if exist_ok:
                return
            raise HfHubHTTPError(f"409 Client Error: tag {tag} already exists",
                                 response=_response(409, "POST", f"{_api_path(repo_id, repo_type)}/tag/{oid}"))
        repo.tags[tag] = oid

    def list_repo_refs(
        self,
        repo_id: str,
        *,
        repo_type: str | None = None,
        include_pull_requests: bool = False,
        token: str | bool | None = None,
    ) -> GitRefs:
        self._record("list_repo_refs", repo_id=repo_id, repo_type=repo_type)
        repo = self._repo(repo_id, repo_type)
        return GitRefs(
            branches=[GitRefInfo(name=n, ref=f"refs/heads/{n}", target_commit=o) for n, o in repo.branches.items()],
            converts=[],
            tags=[GitRefInfo(name=n, ref=f"refs/tags/{n}", target_commit=o) for n, o in repo.tags.items()],
            pull_requests=[] if include_pull_requests else None,
        )

    def list_repo_files(
        self,
        repo_id: str,
        *,
        revision: str | None = None,
        repo_type: str | None = None,
        token: str | bool | None = None,
    ) -> list[str]:
        self._record("list_repo_files", repo_id=repo_id, revision=revision, repo_type=repo_type)
        return sorted(self.files_at(repo_id, revision or constants.DEFAULT_REVISION, repo_type=repo_type))

    def hf_hub_download(
        self,
        repo_id: str,
        filename: str,
        *,
        subfolder: str | None = None,
        repo_type: str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_dir: str | Path | None = None,
        force_download: bool = False,
        etag_timeout: float = constants.DEFAULT_ETAG_TIMEOUT,
        token: bool | str | None = None,
        local_files_only: bool = False,
    ) -> str:
        self._record("hf_hub_download", repo_id=repo_id, filename=filename, repo_type=repo_type,
                     revision=revision, cache_dir=cache_dir)
        if cache_dir is None or local_dir is not None:
            raise NotImplementedError("the fake Hub downloads into an explicit cache_dir only")
        name = f"{subfolder}/{filename}" if subfolder else filename
        oid = self._resolve(repo_id, revision or constants.DEFAULT_REVISION, repo_type)
        files = self._repo(repo_id, repo_type).commits[oid].files
        if name not in files:
            raise RemoteEntryNotFoundError(f"404 Client Error: Entry Not Found: {name}",
                                           response=_response(404, "HEAD", f"/{repo_id}/resolve/{oid}/{name}"))
        return str(_write_cached(_snapshot_dir(cache_dir, repo_id, oid, repo_type), name, files[name]))

    def snapshot_download(
        self,
        repo_id: str,
        *,
        repo_type: str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_dir: str | Path | None = None,
        etag_timeout: float = constants.DEFAULT_ETAG_TIMEOUT,
        force_download: bool = False,
        token: bool | str | None = None,
        local_files_only: bool = False,
        allow_patterns: list[str] | str | None = None,
        ignore_patterns: list[str] | str | None = None,
        max_workers: int = 8,
    ) -> str:
        self._record("snapshot_download", repo_id=repo_id, repo_type=repo_type, revision=revision,
                     cache_dir=cache_dir, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns)
        if cache_dir is None or local_dir is not None:
            raise NotImplementedError("the fake Hub downloads into an explicit cache_dir only")
        oid = self._resolve(repo_id, revision or constants.DEFAULT_REVISION, repo_type)
        files = self._repo(repo_id, repo_type).commits[oid].files
        folder = _snapshot_dir(cache_dir, repo_id, oid, repo_type)
        folder.mkdir(parents=True, exist_ok=True)
        for name in filter_repo_objects(sorted(files), allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            _write_cached(folder, name, files[name])
        return str(folder)

    def run_as_future(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        self._record("run_as_future", fn=getattr(fn, "__name__", repr(fn)))  # a name: keeps no object alive
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-hub")  # one at a time, in order
        return self._pool.submit(fn, *args, **kwargs)

    # -- test helpers -----------------------------------------------------------------------

    def files_at(self, repo_id: str, revision: str, *, repo_type: str | None = None) -> dict[str, bytes]:
        return dict(self.commit(repo_id, revision, repo_type=repo_type).files)

    def commit(self, repo_id: str, revision: str, *, repo_type: str | None = None) -> Commit:
        return self._repo(repo_id, repo_type).commits[self._resolve(repo_id, revision, repo_type)]

    def close(self) -> None:
        """Wait for run_as_future jobs and end its worker thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        return [call.args for call in self.calls if call.method == method]

    # -- internals --------------------------------------------------------------------------

    def _record(self, method: str, **args: Any) -> None:
        self.calls.append(Call(method, args))
        hook = self.before.get(method)
        if hook is not None:
            hook(**args)

    def _repos_of(self, repo_type: str | None) -> dict[str, Repo]:
        return self.dataset_repos if _kind(repo_type) == "dataset" else self.repos

    def _repo(self, repo_id: str, repo_type: str | None = None) -> Repo:
        repos = self._repos_of(repo_type)
        if repo_id not in repos:
            raise RepositoryNotFoundError(f"404 Client Error: Repository Not Found: {repo_id}",
                                          response=_response(404, "GET", _api_path(repo_id, repo_type)))
        return repos[repo_id]

    def _resolve(self, repo_id: str, revision: str, repo_type: str | None = None) -> str:
        """Branch, tag, full or abbreviated commit oid -> full commit oid."""
        repo = self._repo(repo_id, repo_type)
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.tags:
            return repo.tags[revision]
        matches = [oid for oid in repo.commits if len(revision) >= 7 and oid.startswith(revision)]
        if len(matches) == 1:
            return matches[0]
        raise RevisionNotFoundError(f"404 Client Error: Revision Not Found: {revision}",
                                    response=_response(404, "GET", f"{_api_path(repo_id, repo_type)}/revision/{revision}"))

    def _add_commit(self, repo: Repo, parent: str | None, message: str, files: dict[str, bytes],
                    *, branch: str = constants.DEFAULT_REVISION) -> str:
        digest = hashlib.sha1(f"{parent}\n{message}\n{next(self._counter)}".encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + hashlib.sha1(files[name]).digest())
        oid = digest.hexdigest()
        repo.commits[oid] = Commit(oid, parent, message, files)
        repo.branches[branch] = oid
        return oid


def _apply(operation: Any, files: dict[str, bytes], commit_path: str) -> None:
    if isinstance(operation, CommitOperationAdd):
        files[operation.path_in_repo] = _read(operation.path_or_fileobj)
    elif isinstance(operation, CommitOperationDelete):
        if operation.is_folder:
            doomed = [name for name in files if name.startswith(operation.path_in_repo.rstrip("/") + "/")]
        else:
            doomed = [operation.path_in_repo] if operation.path_in_repo in files else []
        if not doomed:
            raise RemoteEntryNotFoundError(f"404 Client Error: cannot delete {operation.path_in_repo}: not found",
                                           response=_response(404, "POST", commit_path))
        for name in doomed:
            del files[name]
    else:
        raise NotImplementedError(f"the fake Hub does not support {type(operation).__name__}")


def _read(source: str | Path | bytes | BinaryIO) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, (str, Path)):
        return Path(source).read_bytes()
    source.seek(0)
    return source.read()


def _snapshot_dir(cache_dir: str | Path, repo_id: str, oid: str, repo_type: str | None = None) -> Path:
    return Path(cache_dir) / f"{_kind(repo_type)}s--{repo_id.replace('/', '--')}" / "snapshots" / oid


def _write_cached(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    if not path.exists():  # a commit's files never change, so the cache never goes stale
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path


def _kind(repo_type: str | None) -> str:
    if repo_type not in (None, "model", "dataset"):
        raise NotImplementedError(f"the fake Hub only holds model and dataset repos, got repo_type={repo_type!r}")
    return repo_type or "model"


def _api_path(repo_id: str, repo_type: str | None) -> str:
    return f"/api/{_kind(repo_type)}s/{repo_id}"


def _web_url(repo_id: str, repo_type: str | None) -> str:
    """The repo's page, which RepoUrl parses back into repo id and type."""
    return f"{ENDPOINT}/{'datasets/' if _kind(repo_type) == 'dataset' else ''}{repo_id}"


def _response(status: int, method: str, path: str) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request(method, f"{ENDPOINT}{path}"))
