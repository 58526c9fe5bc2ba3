"""training.tracking: every training run in a local trackio project under the Classifr home.

Real trackio, real SQLite files, offline: each test tracks into its own tmp_path, with HOME and
HF_HOME pointed at empty temp folders that must stay empty. One test repeats a run in a fresh
interpreter, where nothing has been imported yet, to check what a first run touches.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from classifr.core.config import Settings
from classifr.core.errors import ClassifrError
from tests.conftest import REPO_ROOT
from training import tracking
from training.tracking import TRACKER, RunTracker, flatten_numbers, list_runs, tracking_folder

pytest.importorskip(TRACKER)

CONFIG = {"strategy": "head", "l2": 0.003}
FINAL = {"accuracy": 0.9, "per_class": {"hat": {"f1": 0.8}}}


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """HOME and HF_HOME in temp folders that must stay empty; no remote trackio settings."""
    outside = {name: tmp_path.parent / f"{tmp_path.name}-{name.lower()}" for name in ("HOME", "HF_HOME")}
    for name, folder in outside.items():
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))
    for name in tracking.REMOTE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tracking, "_warned", set())
    yield
    for name, folder in outside.items():
        assert _files(folder) == [], f"tracking wrote into {name}"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Any connection attempt (or Hub whoami) is recorded and fails."""
    import huggingface_hub.hf_api

    attempts: list[str] = []

    def refuse(what: str):
        def fail(*args, **kwargs):
            attempts.append(what)
            raise OSError(f"network access attempted: {what}")

        return fail

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(huggingface_hub.hf_api.HfApi, "_inner_whoami", refuse("whoami"))
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")  # trackio looks the user up when a token is set
    return attempts


def _track(folder: Path, name: str, config: dict, losses: list[float], final: dict) -> None:
    with RunTracker.start(folder=folder, run_name=name, config=config) as tracker:
        assert tracker.active
        for step, loss in enumerate(losses):
            tracker.log({"loss": loss}, step=step)
        tracker.log(final)


def test_a_run_is_listed_with_its_config_and_last_values(tmp_path: Path, no_network: list[str], capsys):
    _track(tmp_path, "v2-head", CONFIG, [0.9, 0.5, 0.3], FINAL)

    (run,) = list_runs(tmp_path)
    assert run["name"] == "v2-head"
    assert run["config"] == CONFIG
    assert run["metrics"] == {"loss": 0.3, "accuracy": 0.9, "per_class/hat/f1": 0.8}
    assert run["last_step"] == 4  # 3 loss steps (0-2), the final values (3), the status (4)
    assert run["status"] == "finished"
    assert run["run_id"] and run["created_at"]
    assert (tmp_path / "classifr.db").is_file()
    assert no_network == []
    assert capsys.readouterr().out == ""  # trackio's prints go to the debug log, not stdout


def test_two_runs_are_listed_oldest_first_and_comparable(tmp_path: Path):
    _track(tmp_path, "v2-head", CONFIG, [0.9, 0.5, 0.3], FINAL)
    _track(tmp_path, "v3-head", {"strategy": "head", "l2": 0.01}, [0.8, 0.4, 0.2], {"accuracy": 0.93})

    runs = list_runs(tmp_path)
    assert [r["name"] for r in runs] == ["v2-head", "v3-head"]
    assert [r["config"]["l2"] for r in runs] == [0.003, 0.01]
    best = max(runs, key=lambda r: r["metrics"]["accuracy"])
    assert best["name"] == "v3-head" and best["metrics"]["loss"] == 0.2
    assert "per_class/hat/f1" not in best["metrics"]  # each run keeps only its own metrics


def test_a_reused_run_name_is_a_second_run(tmp_path: Path):
    _track(tmp_path, "nightly", CONFIG, [0.5], {"accuracy": 0.7})
    _track(tmp_path, "nightly", CONFIG, [0.4], {"accuracy": 0.8})

    runs = list_runs(tmp_path)
    assert [r["metrics"]["accuracy"] for r in runs] == [0.7, 0.8]
    assert runs[0]["run_id"] != runs[1]["run_id"]


def test_disabled_tracking_writes_nothing(tmp_path: Path):
    folder = tmp_path / "tracking"
    with RunTracker.start(folder=folder, run_name="v2", config=CONFIG, enabled=False) as tracker:
        assert not tracker.active
        tracker.log({"loss": 1.0}, step=0)
    assert not folder.exists()
    assert list_runs(folder) == []


def test_finishing_twice_is_fine_and_later_values_are_dropped(tmp_path: Path, caplog):
    tracker = RunTracker.start(folder=tmp_path, run_name="v2", config=CONFIG)
    tracker.log({"loss": 1.0})
    tracker.finish()
    tracker.finish()
    with tracker:  # leaving the block finishes again
        pass
    with caplog.at_level(logging.WARNING, logger=tracking.__name__):
        tracker.log({"loss": 0.5})
    assert "finished" in caplog.text

    (run,) = list_runs(tmp_path)
    assert run["metrics"] == {"loss": 1.0} and run["status"] == "finished"


def test_an_error_inside_the_block_finishes_the_run_as_failed(tmp_path: Path):
    with pytest.raises(RuntimeError, match="out of memory"):
        with RunTracker.start(folder=tmp_path, run_name="v2-full", config={"strategy": "full"}) as tracker:
            tracker.log({"loss": 2.0}, step=0)
            raise RuntimeError("out of memory")
    assert not tracker.active

    (run,) = list_runs(tmp_path)
    assert run["status"] == "failed"
    assert run["metrics"] == {"loss": 2.0}


def test_values_are_numbers_only(tmp_path: Path):
    values = {
        "loss": np.float32(0.25), "images": np.int64(12), "lr": torch.tensor(1e-3), "best": True,
        "note": "text", "shape": [1, 2], "nested": {"a": {"b": 1, "c": "x"}},
    }
    flat = flatten_numbers(values)
    assert flat == {"loss": 0.25, "images": 12, "lr": pytest.approx(1e-3), "best": 1, "nested/a/b": 1}
    assert all(type(v) in (int, float) for v in flat.values())

    with RunTracker.start(folder=tmp_path, run_name="v2", config=CONFIG) as tracker:
        tracker.log(values, step=0)
        tracker.log({"only": "text"}, step=1)  # nothing numeric: nothing logged
    (run,) = list_runs(tmp_path)
    assert run["metrics"] == {"loss": 0.25, "images": 12, "lr": pytest.approx(1e-3), "best": 1, "nested/a/b": 1}


def test_config_values_are_kept_as_json(tmp_path: Path):
    config = {"strategy": "full", "datasets": ("project", "extra"), "home": tmp_path, "epochs": np.int64(3), "promote": None}
    _track(tmp_path, "v2", config, [1.0], {})
    (run,) = list_runs(tmp_path)
    assert run["config"] == {"strategy": "full", "datasets": ["project", "extra"], "home": str(tmp_path), "epochs": 3, "promote": None}


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"run_name": ""}, "''"),
        ({"run_name": "a\nb"}, "'a\\nb'"),
        ({"run_name": "x" * 200}, "x" * 200),
        ({"config": {"_Created": 1}}, "'_Created'"),
        ({"config": [("l2", 1)]}, "list"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict, bad: str):
    arguments = {"folder": tmp_path, "run_name": "v2", "config": CONFIG} | kwargs
    with pytest.raises(ClassifrError, match=re.escape(bad)):
        RunTracker.start(**arguments)
    assert _files(tmp_path) == []


def test_a_file_as_folder_and_a_bad_step_are_named(tmp_path: Path):
    file = tmp_path / "tracking"
    file.write_text("not a folder")
    with pytest.raises(ClassifrError, match="is a file"):
        RunTracker.start(folder=file, run_name="v2", config=CONFIG)
    with RunTracker.start(folder=tmp_path / "ok", run_name="v2", config=CONFIG) as tracker:
        for step in (-1, 1.5, True):
            with pytest.raises(ClassifrError, match=re.escape(f"got {step!r}")):
                tracker.log({"loss": 1.0}, step=step)


def test_runs_in_two_folders_at_once_are_refused_and_one_folder_is_shared(tmp_path: Path):
    import trackio.utils

    default = trackio.utils.TRACKIO_DIR
    with RunTracker.start(folder=tmp_path / "a", run_name="first", config=CONFIG) as first:
        with pytest.raises(ClassifrError, match="/b'"):
            RunTracker.start(folder=tmp_path / "b", run_name="second", config=CONFIG)
        with RunTracker.start(folder=tmp_path / "a", run_name="beside", config=CONFIG) as beside:
            beside.log({"loss": 2.0})
            first.log({"loss": 1.0})  # starting "beside" did not end "first"
    assert trackio.utils.TRACKIO_DIR is default  # trackio's own folder is back once no run is open
    assert {r["name"]: r["metrics"]["loss"] for r in list_runs(tmp_path / "a")} == {"first": 1.0, "beside": 2.0}
    assert not (tmp_path / "b").exists()


def test_remote_trackio_settings_turn_tracking_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog):
    monkeypatch.setenv("TRACKIO_SPACE_ID", "someone/dashboard")
    with caplog.at_level(logging.WARNING, logger=tracking.__name__):
        with RunTracker.start(folder=tmp_path / "t", run_name="v2", config=CONFIG) as tracker:
            tracker.log({"loss": 1.0})
    assert not tracker.active
    assert "TRACKIO_SPACE_ID" in caplog.text and "locally" in caplog.text
    assert not (tmp_path / "t").exists()


def test_without_trackio_runs_are_untracked_with_one_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog):
    monkeypatch.setitem(sys.modules, "trackio", None)  # what an uninstalled package looks like to find_spec
    with caplog.at_level(logging.WARNING, logger=tracking.__name__):
        for name in ("v2", "v3"):
            with RunTracker.start(folder=tmp_path, run_name=name, config=CONFIG) as tracker:
                tracker.log({"loss": 1.0})
    assert not tracker.active
    assert caplog.text.count("trackio is not installed") == 1
    assert _files(tmp_path) == []
    assert list_runs(tmp_path) == []


def test_the_tracking_folder_is_under_the_classifr_home(tmp_path: Path):
    assert tracking_folder(Settings(home=tmp_path)) == tmp_path / "tracking"


_FRESH_RUN = """
import json, socket, sys
from pathlib import Path
attempts = []
def refuse(*args, **kwargs):
    attempts.append("connect")
    raise OSError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse

from training.tracking import RunTracker, list_runs
from accelerate.state import AcceleratorState

folder = Path(sys.argv[1])
with RunTracker.start(folder=folder, run_name="v2-head", config={"strategy": "head", "l2": 0.003}) as tracker:
    for step, loss in enumerate([0.9, 0.5, 0.3]):
        tracker.log({"loss": loss}, step=step)
    tracker.log({"accuracy": 0.9, "per_class": {"hat": {"f1": 0.8}}})
runs = list_runs(folder)
print(json.dumps({"runs": runs, "attempts": attempts, "accelerator_state": dict(AcceleratorState._shared_state)}, default=str))
"""


@pytest.mark.slow
def test_a_first_run_in_a_fresh_process_stays_in_its_folder(tmp_path: Path):
    """What trackio touches when imported and used for the first time: only the tracking folder."""
    folders = {name: tmp_path / name for name in ("home", "hf-home", "xdg-cache", "cwd", "tracking")}
    for folder in folders.values():
        folder.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TRACKIO_", "HF_", "XDG_"))}
    env |= {
        "HOME": str(folders["home"]), "HF_HOME": str(folders["hf-home"]), "XDG_CACHE_HOME": str(folders["xdg-cache"]),
        "HF_TOKEN": "hf_not_a_real_token", "PYTHONPATH": str(REPO_ROOT),
    }
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_FRESH_RUN), str(folders["tracking"])],
        cwd=folders["cwd"], env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)  # stdout holds our JSON only: trackio printed nothing there
    (run,) = result["runs"]
    assert run["config"] == CONFIG
    assert run["metrics"] == {"loss": 0.3, "accuracy": 0.9, "per_class/hat/f1": 0.8}
    assert result["attempts"] == []
    assert result["accelerator_state"] == {}  # no Accelerator: mixed precision stays free to choose
    for name in ("home", "hf-home", "xdg-cache", "cwd"):
        assert _files(folders[name]) == [], f"a first run wrote into {name}"
    assert "classifr.db" in _files(folders["tracking"])


def test_a_trackio_that_would_write_elsewhere_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog):
    """The guard for future trackio releases: if binding the folder does not take, nothing is tracked."""
    import trackio.utils
    from trackio.sqlite_storage import SQLiteStorage

    default = trackio.utils.TRACKIO_DIR
    monkeypatch.setattr(SQLiteStorage, "get_project_db_path", staticmethod(lambda project: default / f"{project}.db"))
    with caplog.at_level(logging.WARNING, logger=tracking.__name__):
        with RunTracker.start(folder=tmp_path / "t", run_name="v2", config=CONFIG) as tracker:
            tracker.log({"loss": 1.0})
    assert not tracker.active
    assert "would write to" in caplog.text
    assert trackio.utils.TRACKIO_DIR is default and trackio.__dict__.get("print") is None
    assert not (tmp_path / "t").exists()


def test_resources_of_each_epoch_are_tracked_and_none_is_left_out(tmp_path: Path):
    from training.resources import RESOURCE_KEYS

    epochs = [
        {"epoch": 1, "train_loss": 0.9, "steps": 4, "images_per_second": 21.5, "peak_memory_mb": 1900.2,
         "cpu_percent": 95.1, "gpu_percent": None, "gpu_peak_memory_mb": None},
        {"epoch": 2, "train_loss": 0.5, "steps": 8, "images_per_second": 23.25, "peak_memory_mb": 1950.0,
         "cpu_percent": 96.0, "gpu_percent": None, "gpu_peak_memory_mb": None},
    ]
    assert set(RESOURCE_KEYS) <= set(epochs[0])
    with RunTracker.start(folder=tmp_path, run_name="full-from-v1", config={"strategy": "full"}) as tracker:
        for record in epochs:
            tracker.log(record, step=record["steps"])
    (run,) = list_runs(tmp_path)
    assert run["metrics"] == {"epoch": 2, "train_loss": 0.5, "steps": 8, "images_per_second": 23.25,
                              "peak_memory_mb": 1950.0, "cpu_percent": 96.0}  # the last epoch's; no GPU here
    assert run["status"] == "finished"
