"""The model registry: LocalRegistry on disk and HubRegistry against the in-memory fake Hub.

A version's "model" here is a tiny config.json with id2label plus a dummy weights file: the
registry never loads models, so nothing real is needed. Crash and concurrency tests run real
processes (sys.executable) and SIGKILL them at the dangerous points.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

import classifr.versions.registry as registry_module
from classifr.core.errors import ConfigError, RegistryError, VersionNotFoundError
from classifr.versions.folder import CHECKSUMS_FILE, verify_checksums
from classifr.versions.registry import (
    ALIASES,
    REGISTRY_FILE,
    VERSION_FILE,
    HubRegistry,
    LocalRegistry,
    ModelRegistry,
    VersionInfo,
)
from tests import fake_hub
from tests.conftest import REPO_ROOT
from tests.fake_hub import FakeHfApi

REPO_ID = "someone/classifr-models"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
HEX40 = re.compile(r"^[0-9a-f]{40}$")


def model_writer(
    labels: tuple[str, ...] = ("cat", "dog"), *, weights: bytes = b"weights", metrics: dict | None = None
) -> Callable[[Path], None]:
    """A write() that saves a tiny "model" the way save_pretrained + model card would."""

    def write(folder: Path) -> None:
        config = {"model_type": "tiny", "id2label": {str(i): label for i, label in enumerate(labels)}}
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
        (folder / "model.safetensors").write_bytes(weights)
        (folder / "README.md").write_text(f"# tiny model: {', '.join(labels)}\n", encoding="utf-8")
        if metrics is not None:
            (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")

    return write


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(params=["local", "hub"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> ModelRegistry:
    if request.param == "local":
        return LocalRegistry(tmp_path / "registry")
    return HubRegistry(REPO_ID, hf_api=FakeHfApi(), cache_dir=tmp_path / "hf-cache")


@pytest.fixture
def fake() -> FakeHfApi:
    return FakeHfApi()


@pytest.fixture
def hub(fake: FakeHfApi, tmp_path: Path) -> HubRegistry:
    return HubRegistry(REPO_ID, hf_api=fake, cache_dir=tmp_path / "hf-cache")


# -- shared behaviour -------------------------------------------------------------------------


def test_empty_registry(registry: ModelRegistry):
    assert registry.is_empty()
    assert registry.list_versions() == []
    assert registry.alias_history() == []
    for ref in ("latest", "production", "candidate", "v1"):
        with pytest.raises(VersionNotFoundError, match=repr(ref)):
            registry.resolve(ref)
    with pytest.raises(VersionNotFoundError, match="'v1'"):
        registry.local_path("v1")


def test_publish_lists_versions_in_order_with_their_fields(registry: ModelRegistry):
    v1 = registry.publish(model_writer(("cat", "dog")), parent=None, aliases=("production",))
    v2 = registry.publish(model_writer(("cat", "dog", "fox")), parent="v1", metadata={"epochs": 3})

    assert not registry.is_empty()
    assert [v.version for v in registry.list_versions()] == ["v1", "v2"]
    assert registry.list_versions() == [v1, v2]
    assert (v1.parent, v1.num_labels, v1.aliases) == (None, 2, ("production",))
    assert (v2.parent, v2.num_labels, v2.aliases, v2.metadata) == ("v1", 3, (), {"epochs": 3})
    assert ISO_UTC.match(v1.created_at) and ISO_UTC.match(v2.created_at)
    assert v1.created_at <= v2.created_at


def test_to_json_has_the_documented_keys(registry: ModelRegistry):
    info = registry.publish(model_writer(), parent=None, metadata={"note": "hi"}, aliases=("production",))
    payload = info.to_json()
    assert payload == {
        "version": "v1",
        "aliases": ["production"],
        "num_labels": 2,
        "parent": None,
        "created_at": info.created_at,
        "metadata": {"note": "hi"},
    }
    json.dumps(payload)  # plain JSON for the CLI and the UI


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"num_labels": 7}, 7),
        ({"model_type": "timm_wrapper", "label_names": ["a", "b", "c"], "num_classes": 3}, 3),  # the default model
        ({"num_classes": 5}, 5),
    ],
)
def test_num_labels_without_id2label(registry: ModelRegistry, config: dict, expected: int):
    def write(folder: Path) -> None:
        (folder / "config.json").write_text(json.dumps(config))

    assert registry.publish(write, parent=None).num_labels == expected


def test_resolve_aliases_latest_and_unknown_refs(registry: ModelRegistry):
    registry.publish(model_writer(), parent=None, aliases=("production",))
    registry.publish(model_writer(), parent="v1", aliases=("candidate",))
    registry.publish(model_writer(), parent="v2")

    assert registry.resolve("production") == "v1"
    assert registry.resolve("candidate") == "v2"
    assert registry.resolve("latest") == "v3"
    assert registry.resolve("v2") == "v2"
    assert registry.get("candidate").version == "v2"
    with pytest.raises(VersionNotFoundError) as caught:
        registry.resolve("v9")
    message = str(caught.value)
    assert "'v9'" in message and "v1, v2, v3" in message and "production -> v1" in message
    assert isinstance(caught.value, KeyError)  # callers may catch the stdlib base


def test_unset_alias_is_reported_by_name(registry: ModelRegistry):
    registry.publish(model_writer(), parent=None)
    with pytest.raises(VersionNotFoundError, match="'candidate' is not set"):
        registry.resolve("candidate")


def test_promote_and_rollback(registry: ModelRegistry):
    registry.publish(model_writer(), parent=None, aliases=("production",))
    registry.publish(model_writer(), parent="v1")

    promoted = registry.promote("v2")
    assert promoted.version == "v2" and promoted.aliases == ("production",)
    assert registry.alias_history() == ["v1", "v2"]
    assert registry.promote("latest").version == "v2"  # again: a no-op
    assert registry.alias_history("production") == ["v1", "v2"]

    rolled = registry.rollback()
    assert rolled.version == "v1" and rolled.aliases == ("production",)
    assert registry.resolve("production") == "v1"
    assert registry.alias_history() == ["v1"]
    assert registry.get("v2").aliases == ()

    with pytest.raises(RegistryError, match="'production'"):
        registry.rollback()
    assert registry.resolve("production") == "v1"


def test_aliases_keep_separate_histories(registry: ModelRegistry):
    registry.publish(model_writer(), parent=None, aliases=("production", "candidate"))
    registry.publish(model_writer(), parent="v1", aliases=("candidate",))
    assert registry.get("v1").aliases == ("production",)
    assert registry.get("v2").aliases == ("candidate",)
    assert registry.alias_history("candidate") == ["v1", "v2"]
    assert registry.rollback("candidate").version == "v1"
    assert registry.get("v1").aliases == ("production", "candidate")


def test_rollback_without_history_is_an_error(registry: ModelRegistry):
    with pytest.raises(RegistryError, match="cannot roll back 'production'"):
        registry.rollback()
    registry.publish(model_writer(), parent=None, aliases=("production",))
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback()


def test_promote_unknown_version_is_an_error(registry: ModelRegistry):
    registry.publish(model_writer(), parent=None, aliases=("production",))
    with pytest.raises(VersionNotFoundError, match="'v5'"):
        registry.promote("v5")
    assert registry.alias_history() == ["v1"]


def test_alias_names_are_validated(registry: ModelRegistry):
    registry.publish(model_writer(), parent=None)
    calls = []
    for bad_call in (
        lambda: registry.promote("v1", alias="staging"),
        lambda: registry.rollback("latest"),
        lambda: registry.alias_history("Production"),
        lambda: registry.publish(lambda folder: calls.append(folder), parent=None, aliases=("prod",)),
    ):
        with pytest.raises(ConfigError, match=r"unknown alias '(staging|latest|Production|prod)'"):
            bad_call()
    assert calls == []  # publish checks aliases before write() does any work
    assert [v.version for v in registry.list_versions()] == ["v1"]


def test_publish_checks_parent_and_metadata_before_writing(registry: ModelRegistry):
    calls = []
    with pytest.raises(VersionNotFoundError, match="'v3'"):
        registry.publish(lambda folder: calls.append(folder), parent="v3")
    with pytest.raises(ConfigError, match="JSON-serializable"):
        registry.publish(lambda folder: calls.append(folder), parent=None, metadata={"when": object()})
    assert calls == [] and registry.is_empty()


def test_parent_is_stored_resolved(registry: ModelRegistry):
    registry.publish(model_writer(), parent=None, aliases=("production",))
    assert registry.publish(model_writer(), parent="production").parent == "v1"


def test_failed_write_publishes_nothing(registry: ModelRegistry):
    registry.publish(model_writer(), parent=None, aliases=("production",))

    def half_then_fail(folder: Path) -> None:
        (folder / "config.json").write_text(json.dumps({"id2label": {"0": "a"}}))
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        registry.publish(half_then_fail, parent="v1", aliases=("production",))
    assert [v.version for v in registry.list_versions()] == ["v1"]
    assert registry.resolve("production") == "v1"

    after = registry.publish(model_writer(("a", "b", "c")), parent="v1")
    assert after.version == "v2" and after.num_labels == 3
    assert registry.resolve("latest") == "v2"


def test_a_version_needs_a_config(registry: ModelRegistry):
    with pytest.raises(RegistryError, match="config.json"):
        registry.publish(lambda folder: (folder / "README.md").write_text("# card"), parent=None)
    with pytest.raises(RegistryError, match="names no labels"):
        registry.publish(lambda folder: (folder / "config.json").write_text("{}"), parent=None)
    assert registry.is_empty()


def test_metadata_round_trips(registry: ModelRegistry):
    metadata = {"dataset": "clothing-small", "accuracy": 0.91, "labels": ["shoes", "hats"], "nested": {"a": None}}
    published = registry.publish(model_writer(), parent=None, metadata=metadata)
    assert published.metadata == metadata
    assert registry.get("v1").metadata == metadata
    assert registry.list_versions()[0].metadata == metadata


def test_local_path_holds_the_written_files(registry: ModelRegistry, tmp_path: Path):
    registry.publish(model_writer(("cat", "dog"), weights=b"w1", metrics={"accuracy": 0.5}), parent=None)
    registry.publish(model_writer(("cat", "dog", "fox"), weights=b"w2"), parent="v1")

    expected = tmp_path / "expected"
    for version, write in (("v1", model_writer(("cat", "dog"), weights=b"w1", metrics={"accuracy": 0.5})),
                           ("v2", model_writer(("cat", "dog", "fox"), weights=b"w2"))):
        (expected / version).mkdir(parents=True)
        write(expected / version)
        got = folder_files(registry.local_path(version))
        record = json.loads(got.pop(VERSION_FILE))
        assert record["version"] == version and record["num_labels"] == len(json.loads(got["config.json"])["id2label"])
        assert verify_checksums(registry.local_path(version), name=version)
        got.pop(CHECKSUMS_FILE)
        # The Hub snapshot also carries main's bookkeeping files as of that commit.
        for bookkeeping in (REGISTRY_FILE, ".gitattributes"):
            got.pop(bookkeeping, None)
        assert got == folder_files(expected / version)


def test_rollback_target_names_the_version_rollback_would_serve(registry: ModelRegistry):
    registry.publish(model_writer(), parent=None, aliases=("production",))
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback_target()
    registry.publish(model_writer(), parent="v1", aliases=("production",))
    assert registry.rollback_target() == "v1" and registry.resolve("production") == "v2"  # nothing moved
    assert registry.rollback().version == "v1"


def test_a_second_registry_object_sees_the_same_state(registry: ModelRegistry, tmp_path: Path):
    registry.publish(model_writer(), parent=None, aliases=("production",))
    registry.publish(model_writer(), parent="v1")
    registry.promote("v2")
    if isinstance(registry, LocalRegistry):
        other: ModelRegistry = LocalRegistry(registry.root)
    else:
        assert isinstance(registry, HubRegistry)
        other = HubRegistry(REPO_ID, hf_api=registry.hf_api, cache_dir=tmp_path / "other-cache")
    assert other.list_versions() == registry.list_versions()
    assert other.alias_history() == ["v1", "v2"]
    assert other.rollback().version == "v1"
    assert registry.resolve("production") == "v1"


def test_version_info_is_hashable_and_ignores_metadata_in_equality():
    a = VersionInfo("v1", None, "2024-01-01T00:00:00Z", 2, ("production",), {"x": 1})
    b = VersionInfo("v1", None, "2024-01-01T00:00:00Z", 2, ("production",), {"x": 2})
    assert a == b and len({a, b}) == 1
    assert ALIASES == ("production", "candidate")


# -- LocalRegistry ----------------------------------------------------------------------------


def test_local_layout_on_disk(tmp_path: Path):
    root = tmp_path / "registry"
    local = LocalRegistry(root)
    local.publish(model_writer(), parent=None, aliases=("production",))
    local.publish(model_writer(), parent="v1")
    local.promote("v2")

    assert sorted(p.name for p in (root / "versions").iterdir()) == ["v1", "v2"]
    assert json.loads((root / "aliases.json").read_text()) == {
        "aliases": {"production": "v2"},
        "history": {"production": ["v1", "v2"]},
    }
    record = json.loads((root / "versions" / "v2" / VERSION_FILE).read_text())
    assert set(record) == {"version", "parent", "created_at", "num_labels", "metadata"}
    assert (record["version"], record["parent"]) == ("v2", "v1")
    assert (root / "next_version").read_text().strip() == "3"
    assert list((root / ".staging").iterdir()) == []
    assert local.local_path("production") == root / "versions" / "v2"


def test_local_listing_ignores_incomplete_folders_and_never_reuses_their_numbers(tmp_path: Path):
    local = LocalRegistry(tmp_path)
    local.publish(model_writer(), parent=None)
    (tmp_path / "versions" / "v7").mkdir()  # e.g. a folder copied in by hand, without its record
    (tmp_path / "versions" / "notes").mkdir()
    assert [v.version for v in local.list_versions()] == ["v1"]
    assert local.publish(model_writer(), parent="v1").version == "v8"


def test_local_failed_commit_step_burns_its_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    local = LocalRegistry(tmp_path)
    local.publish(model_writer(), parent=None)
    real_replace = registry_module._replace_durably

    def fail_on_record(path: Path, data: bytes) -> None:
        if path.name == VERSION_FILE:
            raise OSError(f"no space left writing {path}")
        real_replace(path, data)

    monkeypatch.setattr(registry_module, "_replace_durably", fail_on_record)
    with pytest.raises(OSError, match="no space left"):
        local.publish(model_writer(), parent="v1")
    monkeypatch.undo()

    assert [v.version for v in local.list_versions()] == ["v1"]
    assert list((tmp_path / ".staging").iterdir()) == []
    assert local.publish(model_writer(), parent="v1").version == "v3"  # v2 was claimed, then lost


def test_local_abandoned_staging_is_cleaned_on_the_next_publish(tmp_path: Path):
    local = LocalRegistry(tmp_path)
    staging = tmp_path / ".staging"
    staging.mkdir(parents=True)
    old_elsewhere = staging / "otherhost_123_aaaa"
    fresh_elsewhere = staging / "otherhost_456_bbbb"
    live_here = staging / f"{socket.gethostname()}_{os.getpid()}_cccc"
    dead_here = staging / f"{socket.gethostname()}_{_dead_pid()}_dddd"
    for folder in (old_elsewhere, fresh_elsewhere, live_here, dead_here):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    two_hours_ago = time.time() - 7200
    os.utime(old_elsewhere, (two_hours_ago, two_hours_ago))

    local.publish(model_writer(), parent=None)
    assert sorted(p.name for p in staging.iterdir()) == sorted([fresh_elsewhere.name, live_here.name])
    assert [v.version for v in local.list_versions()] == ["v1"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# Writes a complete tiny model; the crash scripts below start with it.
_CHILD_PRELUDE = """
import json, sys, time
from pathlib import Path
import classifr.versions.registry as registry
root, ready = Path(sys.argv[1]), Path(sys.argv[2])

def write_all(folder):
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b", "2": "c"}}))
    (folder / "model.safetensors").write_bytes(b"child weights")
    (folder / "README.md").write_text("# child")
"""

_CRASH_IN_WRITE = _CHILD_PRELUDE + """
def write_half(folder):
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b", "2": "c"}}))
    ready.touch()
    time.sleep(120)
    (folder / "model.safetensors").write_bytes(b"never written")

registry.LocalRegistry(root).publish(write_half, parent="v1", aliases=("production",))
"""

_CRASH_BEFORE_ALIASES = _CHILD_PRELUDE + """
def stall(self, state):  # called under the lock, after the rename made the version visible
    ready.touch()
    time.sleep(120)

registry.LocalRegistry._write_aliases = stall
registry.LocalRegistry(root).publish(write_all, parent="v1", aliases=("production",))
"""


def _kill_when_ready(script: str, root: Path, tmp_path: Path) -> None:
    """Run `script` in a child process, wait for it to touch its ready file, then SIGKILL it."""
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(root), str(ready)], cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    try:
        while not ready.exists():
            if child.poll() is not None:
                pytest.fail(f"child exited early ({child.returncode}): {child.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail("child never reached the crash point")
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)  # reaped, so its pid reads as dead to the next publisher
        child.stderr.close()


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_local_crash_while_writing_leaves_the_registry_unchanged(tmp_path: Path):
    root = tmp_path / "registry"
    local = LocalRegistry(root)
    local.publish(model_writer(), parent=None, aliases=("production",))
    before = local.list_versions()

    _kill_when_ready(_CRASH_IN_WRITE, root, tmp_path)

    assert local.list_versions() == before
    assert local.resolve("production") == "v1"
    assert len(list((root / ".staging").iterdir())) == 1  # the dead child's half-written folder

    after = local.publish(model_writer(("x", "y", "z")), parent="v1", aliases=("production",))
    assert after.version == "v2" and local.resolve("production") == "v2"
    assert set(folder_files(local.local_path("v2"))) == {"config.json", "model.safetensors", "README.md", VERSION_FILE, CHECKSUMS_FILE}
    assert list((root / ".staging").iterdir()) == []  # its owner is dead: cleaned up


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_local_crash_between_rename_and_alias_update_stays_consistent(tmp_path: Path):
    root = tmp_path / "registry"
    local = LocalRegistry(root)
    local.publish(model_writer(), parent=None, aliases=("production",))

    _kill_when_ready(_CRASH_BEFORE_ALIASES, root, tmp_path)

    # The version became visible whole; the alias change never happened.
    assert [v.version for v in local.list_versions()] == ["v1", "v2"]
    v2 = local.get("v2")
    assert (v2.parent, v2.num_labels, v2.aliases) == ("v1", 3, ())
    files = folder_files(local.local_path("v2"))
    assert files["model.safetensors"] == b"child weights" and files["README.md"] == b"# child"
    assert local.resolve("production") == "v1" and local.alias_history() == ["v1"]

    # The dead child held the lock; the kernel released it, so the registry still works.
    assert local.publish(model_writer(), parent="v2").version == "v3"
    assert local.promote("v2").aliases == ("production",)


_CONCURRENT_PUBLISH = """
import json, sys, time
from pathlib import Path
from classifr.versions.registry import LocalRegistry
root, ready, go, writer = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]

def write(folder):
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b"}}))
    (folder / "model.safetensors").write_bytes(writer.encode())

registry = LocalRegistry(root)
ready.touch()
while not go.exists():
    time.sleep(0.005)
print(registry.publish(write, parent=None, metadata={"writer": writer}).version)
"""


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_local_concurrent_publishers_get_distinct_versions(tmp_path: Path):
    root, go = tmp_path / "registry", tmp_path / "go"
    children = []
    for writer in "abcd":
        ready = tmp_path / f"ready-{writer}"
        args = [str(root), str(ready), str(go), writer]
        children.append((ready, subprocess.Popen([sys.executable, "-c", _CONCURRENT_PUBLISH, *args], cwd=REPO_ROOT,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    deadline = time.monotonic() + 30
    while not all(ready.exists() for ready, _ in children) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = [child.communicate(timeout=60) for _, child in children]
    assert all(child.returncode == 0 for _, child in children), [err for _, err in outputs]

    got = sorted(out.strip() for out, _ in outputs)
    assert got == ["v1", "v2", "v3", "v4"]
    local = LocalRegistry(root)
    by_writer = {v.metadata["writer"]: v.version for v in local.list_versions()}
    assert sorted(by_writer) == ["a", "b", "c", "d"]
    for writer, version in by_writer.items():
        assert (local.local_path(version) / "model.safetensors").read_bytes() == writer.encode()


def test_local_concurrent_threads_get_distinct_versions(tmp_path: Path):
    local = LocalRegistry(tmp_path)
    with ThreadPoolExecutor(max_workers=4) as pool:
        infos = list(pool.map(lambda i: local.publish(model_writer(weights=bytes([i])), parent=None), range(4)))
    versions = [info.version for info in infos]
    assert sorted(versions) == ["v1", "v2", "v3", "v4"]


# -- HubRegistry ------------------------------------------------------------------------------


def test_fake_hub_matches_the_real_hf_api_signatures():
    for name in fake_hub.METHODS:
        fake_params = inspect.signature(getattr(FakeHfApi, name)).parameters
        real_params = inspect.signature(getattr(HfApi, name)).parameters
        for param in fake_params.values():
            assert param.name in real_params, f"HfApi.{name} has no parameter {param.name!r}"
            assert param.kind == real_params[param.name].kind, f"HfApi.{name}({param.name}) kind differs"
        required = [p.name for p in real_params.values() if p.default is inspect.Parameter.empty]
        assert all(name_ in fake_params for name_ in required), f"fake {name} lacks a required parameter"


def test_hub_registry_builds_a_real_client_by_default(tmp_path: Path):
    hub = HubRegistry(REPO_ID, token="hf_not_a_real_token", cache_dir=tmp_path)
    assert isinstance(hub.hf_api, HfApi) and hub.hf_api.token == "hf_not_a_real_token"


def test_hub_repo_is_created_on_first_publish(hub: HubRegistry, fake: FakeHfApi):
    assert hub.list_versions() == [] and REPO_ID not in fake.repos
    hub.publish(model_writer(), parent=None)
    hub.publish(model_writer(), parent="v1")
    assert fake.calls_to("create_repo") == [{"repo_id": REPO_ID, "repo_type": "model", "exist_ok": True}]


def test_hub_one_commit_and_tag_per_version(hub: HubRegistry, fake: FakeHfApi):
    hub.publish(model_writer(), parent=None, aliases=("production",))
    hub.publish(model_writer(), parent="v1")

    refs = fake.list_repo_refs(REPO_ID)
    tags = {tag.name: tag.target_commit for tag in refs.tags}
    assert sorted(tags) == ["v1", "v2"]
    assert [fake.commit(REPO_ID, tags[v]).message for v in ("v1", "v2")] == ["Publish v1", "Publish v2"]
    assert fake.commit(REPO_ID, tags["v2"]).parent != tags["v1"]  # the alias commit lies between
    publishes = [c for c in fake.calls_to("create_commit") if c["commit_message"].startswith("Publish")]
    assert all(HEX40.match(c["parent_commit"]) for c in publishes)


def test_hub_main_holds_only_the_latest_version(hub: HubRegistry, fake: FakeHfApi):
    hub.publish(model_writer(weights=b"w1", metrics={"accuracy": 0.5}), parent=None, aliases=("production",))
    hub.publish(model_writer(weights=b"w2"), parent="v1")

    on_main = fake.files_at(REPO_ID, "main")
    assert sorted(on_main) == sorted(
        ["config.json", "model.safetensors", "README.md", VERSION_FILE, CHECKSUMS_FILE, REGISTRY_FILE, ".gitattributes"]
    )
    assert on_main["model.safetensors"] == b"w2"
    assert json.loads(on_main[VERSION_FILE])["version"] == "v2"
    assert json.loads(on_main[REGISTRY_FILE])["aliases"] == {"production": "v1"}
    assert "metrics.json" in fake.files_at(REPO_ID, "v1")  # still in v1's own commit
    assert (hub.local_path("v1") / "metrics.json").is_file()


def test_hub_downloads_are_pinned_to_commit_oids(hub: HubRegistry, fake: FakeHfApi):
    hub.publish(model_writer(), parent=None, aliases=("production",))
    hub.publish(model_writer(), parent="v1")
    fake.calls.clear()

    hub.list_versions()
    path = hub.local_path("production")

    tags = {tag.name: tag.target_commit for tag in fake.list_repo_refs(REPO_ID).tags}
    downloads = fake.calls_to("hf_hub_download")
    records = [c["revision"] for c in downloads if c["filename"] == VERSION_FILE]
    assert sorted(records) == sorted(tags.values())
    assert all(HEX40.match(c["revision"]) for c in downloads)  # the registry file too: main's head oid
    snapshots = fake.calls_to("snapshot_download")
    assert [c["revision"] for c in snapshots] == [tags["v1"]]
    assert path.name == tags["v1"] and path.is_relative_to(hub.cache_dir)


def test_hub_stale_alias_update_is_retried_once(hub: HubRegistry, fake: FakeHfApi, tmp_path: Path):
    hub.publish(model_writer(), parent=None, aliases=("production",))
    hub.publish(model_writer(), parent="v1")
    other = HubRegistry(REPO_ID, hf_api=fake, cache_dir=tmp_path / "other-cache")
    _interleave(fake, "create_commit", lambda: other.promote("v2", alias="candidate"), times=1)

    hub.promote("v2")

    # The retry re-read the registry file, so the concurrent change survived.
    assert hub.resolve("production") == "v2" and hub.resolve("candidate") == "v2"
    parents = [c["parent_commit"] for c in fake.calls_to("create_commit")[-3:]]
    assert parents[0] != parents[2]


def test_hub_alias_update_that_stays_stale_raises(hub: HubRegistry, fake: FakeHfApi, tmp_path: Path):
    hub.publish(model_writer(), parent=None, aliases=("production",))
    hub.publish(model_writer(), parent="v1", aliases=("candidate",))
    other = HubRegistry(REPO_ID, hf_api=fake, cache_dir=tmp_path / "other-cache")
    targets = iter(["v1", "v2"])
    _interleave(fake, "create_commit", lambda: other.promote(next(targets), alias="candidate"), times=2)

    with pytest.raises(RegistryError, match=f"{REPO_ID}.*changed concurrently"):
        hub.promote("v2")
    assert hub.resolve("production") == "v1"


def test_hub_concurrent_publish_takes_the_next_number(hub: HubRegistry, fake: FakeHfApi, tmp_path: Path):
    hub.publish(model_writer(), parent=None)
    other = HubRegistry(REPO_ID, hf_api=fake, cache_dir=tmp_path / "other-cache")
    _interleave(fake, "create_commit", lambda: other.publish(model_writer(weights=b"other"), parent="v1"), times=1)

    mine = hub.publish(model_writer(weights=b"mine"), parent="v1")

    assert mine.version == "v3"
    assert [v.version for v in hub.list_versions()] == ["v1", "v2", "v3"]
    assert (hub.local_path("v2") / "model.safetensors").read_bytes() == b"other"
    assert (hub.local_path("v3") / "model.safetensors").read_bytes() == b"mine"


def test_hub_crash_between_commit_and_tag_burns_the_number(hub: HubRegistry, fake: FakeHfApi):
    hub.publish(model_writer(), parent=None, aliases=("production",))

    def fail(**_: object) -> None:
        del fake.before["create_tag"]
        raise HfHubHTTPError("500 Server Error", response=fake_hub._response(500, "POST", "/tag"))

    fake.before["create_tag"] = fail
    with pytest.raises(RegistryError, match="tag v2"):
        hub.publish(model_writer(), parent="v1")
    assert [v.version for v in hub.list_versions()] == ["v1"]
    assert hub.resolve("production") == "v1"

    assert hub.publish(model_writer(), parent="v1").version == "v3"
    assert [v.version for v in hub.list_versions()] == ["v1", "v3"]


def test_hub_errors_become_registry_errors(hub: HubRegistry, fake: FakeHfApi):
    hub.publish(model_writer(), parent=None)

    def offline(**_: object) -> None:
        response = fake_hub._response(503, "GET", "/")
        raise HfHubHTTPError("503 Server Error: Service Unavailable\nmore detail", response=response)

    fake.before["list_repo_refs"] = offline
    with pytest.raises(RegistryError, match=f"{REPO_ID}: 503 Server Error: Service Unavailable$"):
        hub.list_versions()


def _interleave(fake: FakeHfApi, method: str, action: Callable[[], object], *, times: int) -> None:
    """Run `action` (another writer) at the start of the next `times` calls to `method`."""
    remaining = [times]

    def hook(**_: object) -> None:
        if remaining[0] == 0:
            return
        remaining[0] -= 1
        del fake.before[method]  # the other writer's own calls must not trigger it again
        try:
            action()
        finally:
            fake.before[method] = hook

    fake.before[method] = hook
