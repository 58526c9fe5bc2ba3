"""The full strategy on two processes (accelerate launch, gloo on CPU) gives what one process gives
(docs/training-gpu.md).

The same small real project (clothing-small photos, the real v1 Lite0, a new head) is trained once by
`python -m training.train` and once by `accelerate launch` on two CPU processes, each in its own
CLASSIFR_HOME copy: only the main process publishes, tracks and prints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from classifr.core.errors import ClassifrError
from tests.conftest import REPO_ROOT
from tests.test_training import _add, _photos

# The arguments of both runs. 24 training photos: 3 steps of 8 an epoch on one process, 3 steps of
# 2 x 4 on two (a count the global batch divides, so both runs take the same steps on the same photos).
TRAIN_ARGS = ["--strategy", "full", "--new-head", "--epochs", "2", "--batch-size", "8", "--promote", "never",
              "--json", "--quiet"]
# Two processes differ from one in their augmentation draws (each data-loader worker seeds its own) and in
# the order of the gradient sums. Measured, the same both times each ran (docs/training-gpu.md): accuracy
# 1.000 and 1.000 on the 12 held-out photos, final train loss 0.4473 (one process) and 0.4416 (two).
ACCURACY_TOLERANCE = 1 / 12 + 1e-9  # at most one held-out photo answered differently
LOSS_TOLERANCE = 0.05  # about 9 times the measured gap


def _launch_two_processes() -> list[str]:
    """accelerate launch on two CPU processes.

    `--cpu` alone starts a single process (accelerate's CPU path for several needs MPI); `--multi_gpu`
    starts them with torchrun, and ACCELERATE_USE_CPU=1 (in the environment) puts them on gloo.
    """
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]


def _train(home, launcher: list[str], extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLASSIFR_HOME": str(home), "CLASSIFR_NUM_THREADS": "1", **(extra_env or {})}
    return subprocess.run([*launcher, "-m", "training.train", *TRAIN_ARGS], cwd=REPO_ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=280)


def _project(project_home, clothing_dir, home):
    shutil.copytree(project_home / "registry", home / "registry")
    for label in ("hat", "shoes", "pants"):
        _add(home, _photos(clothing_dir, label, train=8, test=4), label)
    return home


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_publish_one_version_that_matches_one_process(project_home, clothing_dir, tmp_path):
    from classifr.versions.folder import read_metrics
    from training.tracking import list_runs

    one = _project(project_home, clothing_dir, tmp_path / "one")
    two = tmp_path / "two"
    shutil.copytree(one, two)  # the same photos, the same v1: two projects that differ only in how they train

    single = _train(one, [sys.executable])
    assert single.returncode == 0, single.stderr[-3000:]
    double = _train(two, _launch_two_processes(), {"ACCELERATE_USE_CPU": "1"})
    assert double.returncode == 0, double.stderr[-3000:]

    # stdout is the main process's JSON alone: the other process prints nothing.
    first, second = json.loads(single.stdout), json.loads(double.stdout)
    assert "classifr: error" not in double.stderr
    assert first["version"] == second["version"] == "v2"
    assert sorted(p.name for p in (two / "registry" / "versions").iterdir()) == ["v1", "v2"]  # published once
    assert first["metrics"]["num_images"] == second["metrics"]["num_images"] == 12

    hyper_one = read_metrics(one / "registry" / "versions" / "v2").data["hyperparameters"]
    hyper_two = read_metrics(two / "registry" / "versions" / "v2").data["hyperparameters"]
    assert (hyper_one["num_processes"], hyper_two["num_processes"]) == (1, 2)
    assert (hyper_one["batch_size"], hyper_two["batch_size"]) == (8, 4)  # per process: the global batch split

    [run_one], [run_two] = list_runs(one / "tracking"), list_runs(two / "tracking")  # tracked once, by the main process
    loss_one, loss_two = run_one["metrics"]["train_loss"], run_two["metrics"]["train_loss"]
    accuracy_one, accuracy_two = first["metrics"]["accuracy"], second["metrics"]["accuracy"]
    print(f"1 process: accuracy {accuracy_one:.4f}, final train loss {loss_one:.4f}, {_timings(first)}; "
          f"2 processes: accuracy {accuracy_two:.4f}, final train loss {loss_two:.4f}, {_timings(second)}")
    assert run_two["last_step"] == run_one["last_step"]  # the same number of optimizer steps
    assert abs(accuracy_two - accuracy_one) <= ACCURACY_TOLERANCE
    assert abs(loss_two - loss_one) <= LOSS_TOLERANCE


def _timings(outcome: dict) -> str:
    return ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in outcome["timings"].items())


# --- what several processes refuse, and how they share the cores (no launch needed) -----------------


def test_only_the_full_strategy_runs_on_several_processes():
    from training.train import TrainOptions, _check_processes

    _check_processes(TrainOptions(strategy="head"), 1)
    _check_processes(TrainOptions(strategy="full", batch_size=32), 4)
    with pytest.raises(ClassifrError, match="the head strategy runs in one process.*got 2 processes"):
        _check_processes(TrainOptions(strategy="head"), 2)
    with pytest.raises(ClassifrError, match="--batch-size 30 does not split evenly between 4 processes"):
        _check_processes(TrainOptions(strategy="full", batch_size=30), 4)


@pytest.mark.parametrize(("threads", "local_processes", "each"), [(2, None, 2), (2, "2", 1), (1, "2", 1), (16, "4", 4)])
def test_the_processes_of_one_machine_share_its_threads(threads, local_processes, each, monkeypatch):
    from training.processes import threads_per_process as _threads_per_process

    if local_processes is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_processes)
    assert _threads_per_process(threads) == each
