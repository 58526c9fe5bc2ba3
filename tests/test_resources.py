"""training.resources: a window over real work (memory, CPU, a child process) and values that cannot be read."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest
import torch

from training import resources
from training.resources import RESOURCE_KEYS, ResourceMeter

MB = 2**20

# A child that holds 200 MB (written, so resident) while it spins for 0.6 s of CPU time, then ends.
CHILD = textwrap.dedent("""
    import sys, time
    block = b"x" * (200 * 2**20)
    print("ready", flush=True)
    started = time.process_time()
    while time.process_time() - started < 0.6:
        pass
""")


def test_a_window_over_real_work_sees_its_memory_cpu_and_speed():
    with ResourceMeter(interval=0.05) as meter:
        # The baseline as the meter sees it (this process and any children it already has: under
        # pytest-xdist a worker may still hold a child process from an earlier test).
        meter.start()
        time.sleep(0.2)
        baseline = meter.stop(0)["peak_memory_mb"]
        before = time.perf_counter()
        meter.start()
        after_start = time.perf_counter()
        block = np.ones(200 * MB // 8)  # 200 MB, written
        time.sleep(0.3)  # several samples while it is held
        del block
        x = torch.randn(300, 300)
        for _ in range(50):
            x = torch.tanh(x @ x)
        before_stop = time.perf_counter()
        record = meter.stop(120)
        after = time.perf_counter()
    assert set(record) == set(RESOURCE_KEYS)
    assert 180 <= record["peak_memory_mb"] - baseline <= 400, (baseline, record)
    assert 0 < record["cpu_percent"] <= 100
    assert 120 / (after - before) <= record["images_per_second"] <= 120 / (before_stop - after_start) + 0.01
    assert record["gpu_percent"] is None and record["gpu_peak_memory_mb"] is None


def test_each_window_starts_afresh():
    with ResourceMeter(interval=0.05) as meter:
        meter.start()
        block = np.ones(200 * MB // 8)
        time.sleep(0.15)
        del block
        first = meter.stop(0)
        meter.start()
        time.sleep(0.1)
        second = meter.stop(0)
    assert second["peak_memory_mb"] < first["peak_memory_mb"] - 150  # the first window's peak is forgotten
    assert first["images_per_second"] == 0.0


def test_children_count_in_memory_and_cpu():
    with ResourceMeter(interval=0.05) as meter:
        before = time.perf_counter()
        meter.start()
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            own_rss = psutil.Process().memory_info().rss
            assert child.wait(timeout=60) == 0  # reaped: its CPU time is now the parent's children_user
        finally:
            child.kill()
        record = meter.stop(0)
        window = time.perf_counter() - before  # at least the meter's own window
    assert record["peak_memory_mb"] * MB >= own_rss + 180 * MB
    # The child alone spent 0.6 CPU seconds in the window; this process is counted as well.
    assert record["cpu_percent"] / 100 * resources._usable_cores() * window >= 0.55, (record, window)


def test_gpu_keys_are_none_without_cuda():
    for device in ("cpu", "cuda"):  # "cuda" on a machine without one: the GPU keys stay None, no error
        if device == "cuda" and torch.cuda.is_available():
            continue
        with ResourceMeter(device=device, interval=0.05) as meter:
            meter.start()
            record = meter.stop(1)
        assert record["gpu_percent"] is None and record["gpu_peak_memory_mb"] is None
        assert record["peak_memory_mb"] > 0


def test_gpu_keys_come_from_torch_cuda_and_a_missing_nvml_gives_none(monkeypatch: pytest.MonkeyPatch, caplog):
    """No GPU here: torch.cuda's readers are stood in for, to check what the meter does with them."""
    busy = iter([30.0, 50.0, 70.0] + [70.0] * 1000)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "utilization", lambda device=None: next(busy))
    with ResourceMeter(device="cuda", interval=60) as meter:  # samples at start and stop only
        meter._cuda = True
        meter.start()
        meter._sample()
        record = meter.stop(10)
    assert record["gpu_peak_memory_mb"] == 3072.0 and record["gpu_percent"] == 50.0

    def no_nvml(device=None):
        raise ModuleNotFoundError("pynvml does not seem to be installed")

    monkeypatch.setattr(torch.cuda, "utilization", no_nvml)
    with ResourceMeter(device="cuda", interval=60) as meter, caplog.at_level(logging.WARNING, logger=resources.__name__):
        meter._cuda = True
        meter.start()
        record = meter.stop(10)
    assert record["gpu_percent"] is None and record["gpu_peak_memory_mb"] == 3072.0
    assert len(caplog.records) == 1 and "gpu_percent" in caplog.records[0].getMessage()


def test_a_failing_psutil_read_gives_none_and_one_warning(monkeypatch: pytest.MonkeyPatch, caplog):
    def denied(*_args, **_kwargs):
        raise psutil.AccessDenied(pid=1)

    with ResourceMeter(interval=0.05) as meter, caplog.at_level(logging.WARNING, logger=resources.__name__):
        monkeypatch.setattr(meter._process, "memory_info", denied)
        monkeypatch.setattr(meter._process, "cpu_times", denied)
        for _ in range(2):
            meter.start()
            time.sleep(0.12)
            record = meter.stop(10)
    assert record["peak_memory_mb"] is None and record["cpu_percent"] is None
    assert record["images_per_second"] > 0
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # one per value, not one per sample or window
    assert any("peak_memory_mb" in w for w in warnings) and any("cpu_percent" in w for w in warnings)


def test_bad_use_is_named():
    with pytest.raises(ValueError, match="interval must be a positive number of seconds, got 0"):
        ResourceMeter(interval=0)
    with ResourceMeter() as meter:
        with pytest.raises(RuntimeError, match="without start"):
            meter.stop(1)
        meter.start()
        with pytest.raises(ValueError, match="images must be a whole number >= 0, got -1"):
            meter.stop(-1)
    with pytest.raises(RuntimeError, match="closed"):
        meter.start()


def test_the_sampler_thread_ends_on_close():
    meter = ResourceMeter(interval=0.05)
    meter.start()
    thread = meter._thread
    assert thread is not None and thread.is_alive()
    meter.stop(0)
    meter.close()
    meter.close()  # idempotent
    assert not thread.is_alive()


# --- where the records show: the progress file the Train tab reads -------------------------------------


def test_the_epoch_writer_appends_whole_lines_beside_the_progress(tmp_path):
    from training.train import _epoch_writer, _progress_writer

    path = tmp_path / "progress.jsonl"
    assert _epoch_writer(None) is None
    _progress_writer(path)("fine-tuning", 0.7)
    _epoch_writer(path)({"epoch": 1, "train_loss": float("nan"), "lr": torch.tensor(0.5), "gpu_percent": None,
                         "images_per_second": 24.0})
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0]) == {"stage": "fine-tuning", "fraction": 0.7}
    assert json.loads(lines[1]) == {"epoch_record": {"epoch": 1, "train_loss": None, "lr": "tensor(0.5000)",
                                                     "gpu_percent": None, "images_per_second": 24.0}}


def test_job_state_reads_the_epochs_from_mixed_lines_and_ignores_a_torn_one(tmp_path):
    from classifr.app.jobs import JobState, TrainingJobs

    path = tmp_path / "progress.jsonl"
    path.write_text(
        '{"stage": "training", "fraction": 0.1}\n'
        '{"epoch_record": {"epoch": 1, "images_per_second": 21.0, "peak_memory_mb": 1900.0}}\n'
        '[1, 2]\n'
        '{"stage": "fine-tuning", "fraction": 0.75}\n'
        '{"epoch_record": {"epoch": 2, "images_per_second": 23.0, "peak_memory_mb": 1950.0}}\n'
        '{"epoch_record": {"epoch": 3, "images_per_sec'  # still being written
    )
    jobs = TrainingJobs(tmp_path)
    jobs._progress_file = path  # what start() sets up before launching the script
    jobs._state = JobState(status="running", stage="starting")
    state = jobs.state()
    assert (state.stage, state.fraction) == ("fine-tuning", 0.75)
    assert [e["epoch"] for e in state.epochs] == [1, 2] and state.epochs[1]["images_per_second"] == 23.0
    assert state.to_json()["epochs"] == state.epochs

    path.unlink()  # unreadable: what was known stays
    jobs._state = JobState(status="running", stage="fine-tuning", epochs=state.epochs)
    assert jobs.state().epochs == state.epochs


def test_a_finished_run_keeps_its_epochs(tmp_path):
    from classifr.app.jobs import JobState, TrainingJobs

    path = tmp_path / "progress.jsonl"
    path.write_text('{"epoch_record": {"epoch": 1, "cpu_percent": 97.0}}\n')
    jobs = TrainingJobs(tmp_path)
    jobs._progress_file = path
    jobs._state = JobState(status="running", stage="publishing")
    script = subprocess.Popen([sys.executable, "-c", "print('{\"version\": \"v2\"}')"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jobs._wait(script)  # what the job's thread does when the script ends
    state = jobs.state()
    assert state.status == "succeeded" and state.outcome == {"version": "v2"}
    assert state.epochs == [{"epoch": 1, "cpu_percent": 97.0}]
