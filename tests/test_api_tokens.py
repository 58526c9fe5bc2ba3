"""API tokens: the store (hash only, revocation seen across processes, safe concurrent writes) and
`classifr token` run as a user runs it."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from classifr.app.tokens import TOKENS_FILE, TokenStore
from classifr.core.errors import ClassifrError, TokenError

CREATES_PER_PROCESS = 40


def test_create_verify_revoke(tmp_path):
    store = TokenStore(tmp_path)
    token = store.create("ci")
    other = store.create("phone-app.v2")

    assert token.startswith("cfr_") and len(token) > 40 and token != other
    assert store.verify(token) == "ci"
    assert store.verify(other) == "phone-app.v2"

    revoked = store.revoke("ci")
    assert revoked.name == "ci" and revoked.revoked_at is not None and revoked.prefix == token[:8]
    assert store.verify(token) is None
    assert store.verify(other) == "phone-app.v2"
    assert [(t.name, t.revoked_at is None) for t in store.list()] == [("ci", False), ("phone-app.v2", True)]

    again = store.create("ci")  # a revoked name may be given to a new token
    assert store.verify(again) == "ci" and store.verify(token) is None


def test_the_file_keeps_only_the_hash_readable_by_its_owner(tmp_path):
    store = TokenStore(tmp_path)
    assert not (tmp_path / TOKENS_FILE).exists()  # nothing written before the first token
    token = store.create("ci")

    path = tmp_path / TOKENS_FILE
    text = path.read_text()
    assert token not in text and token[4:] not in text
    row = json.loads(text)["tokens"][0]
    assert set(row) == {"name", "prefix", "sha256", "created_at", "revoked_at"}
    assert len(row["sha256"]) == 64 and row["prefix"] == token[:8]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("candidate", [None, "", "cfr_", "not-a-token", "x" * 10_000])
def test_anything_but_a_valid_token_is_refused(tmp_path, candidate):
    store = TokenStore(tmp_path)
    assert store.verify(candidate) is None  # no file yet: no tokens
    token = store.create("ci")
    assert store.verify(candidate) is None
    assert store.verify(token[:-1]) is None and store.verify(token + "x") is None
    assert store.verify(token.upper()) is None


def test_a_revoke_made_elsewhere_is_seen_by_the_next_verify(tmp_path):
    app, cli = TokenStore(tmp_path), TokenStore(tmp_path)  # the serving app's view, another process's
    token = cli.create("ci")
    assert app.verify(token) == "ci"  # read and cached

    cli.revoke("ci")
    assert app.verify(token) is None

    new = cli.create("ci")
    assert app.verify(new) == "ci"
    (tmp_path / TOKENS_FILE).unlink()
    assert app.verify(new) is None  # the file gone: no tokens


def test_verify_reads_the_file_only_when_it_changed(tmp_path, monkeypatch):
    store = TokenStore(tmp_path)
    token = store.create("ci")
    reads = []
    real_read = TokenStore._read_text
    monkeypatch.setattr(TokenStore, "_read_text", lambda self: reads.append(self is store) or real_read(self))

    for _ in range(50):
        assert store.verify(token) == "ci"
    assert reads.count(True) == 1

    TokenStore(tmp_path).create("other")
    assert store.verify(token) == "ci"
    assert reads.count(True) == 2


@pytest.mark.parametrize("name", ["", "a b", "ci/../x", "é", "x" * 65, "tab\t", None])
def test_bad_names_are_refused_naming_them(tmp_path, name):
    store = TokenStore(tmp_path)
    with pytest.raises(TokenError) as err:
        store.create(name)
    assert repr(name) in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ClassifrError)
    assert not (tmp_path / TOKENS_FILE).exists()


def test_duplicate_and_unknown_names_are_refused(tmp_path):
    store = TokenStore(tmp_path)
    store.create("ci")
    with pytest.raises(TokenError, match="a token named 'ci' exists already; revoke it first"):
        store.create("ci")
    with pytest.raises(TokenError, match="no token named 'nobody'"):
        store.revoke("nobody")
    store.revoke("ci")
    with pytest.raises(TokenError, match="'ci' is revoked already"):
        store.revoke("ci")
    assert len(store.list()) == 1


@pytest.mark.parametrize("content", ["{not json", "[]", '{"tokens": [{"name": "ci"}]}', '{"tokens": {}}'])
def test_a_corrupt_file_is_an_error_naming_it_never_a_reset(tmp_path, content):
    path = tmp_path / TOKENS_FILE
    path.write_text(content)
    store = TokenStore(tmp_path)
    for attempt in (lambda: store.create("ci"), store.list, lambda: store.verify("cfr_x"), lambda: store.revoke("ci")):
        with pytest.raises(TokenError, match="is corrupt") as err:
            attempt()
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert path.read_text() == content


def _create_many(home: str, start, worker: int) -> None:
    start.wait(timeout=30)  # both processes imported and ready: their creates overlap
    store = TokenStore(Path(home))
    for i in range(CREATES_PER_PROCESS):
        store.create(f"w{worker}-{i}")


def test_two_processes_creating_at_once_keep_every_token(tmp_path):
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [context.Process(target=_create_many, args=(str(tmp_path), start, n)) for n in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        if worker.is_alive():
            worker.kill()
    assert [worker.exitcode for worker in workers] == [0, 0]

    names = {t.name for t in TokenStore(tmp_path).list()}
    assert names == {f"w{n}-{i}" for n in range(2) for i in range(CREATES_PER_PROCESS)}


def _classifr(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLASSIFR_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "classifr", "token", *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_classifr_token_end_to_end(tmp_path):
    app = TokenStore(tmp_path)  # the running app's view of the same home

    created = _classifr(tmp_path, "create", "ci")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert created.stderr.strip() == "store it now: Classifr keeps only its hash"
    assert app.verify(token) == "ci"

    as_json = _classifr(tmp_path, "create", "batch-job", "--json")
    body = json.loads(as_json.stdout)
    assert set(body) == {"name", "token", "created_at"} and app.verify(body["token"]) == "batch-job"

    listed = _classifr(tmp_path, "list", "--json")
    assert [(t["name"], t["prefix"], t["revoked_at"]) for t in json.loads(listed.stdout)] == [
        ("ci", token[:8], None), ("batch-job", body["token"][:8], None)
    ]
    table = _classifr(tmp_path, "list").stdout.splitlines()
    assert table[0].split() == ["name", "prefix", "created", "revoked"] and table[1].split()[:2] == ["ci", token[:8]]

    revoked = _classifr(tmp_path, "revoke", "ci")
    assert revoked.returncode == 0 and "revoked ci" in revoked.stdout
    assert app.verify(token) is None and app.verify(body["token"]) == "batch-job"

    again = _classifr(tmp_path, "revoke", "ci")
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.splitlines() == ["classifr: error: the token named 'ci' is revoked already"]
