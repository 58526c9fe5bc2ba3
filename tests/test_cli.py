"""The `classifr` command on the real default model.

One test runs `python -m classifr` as a user does (a subprocess: the entry point, the exit status,
stderr without a traceback). The others call `classifr.cli.main` in this process (`run_cli`), which
is what the entry point runs, without paying ~8 s of torch and transformers imports per command.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from classifr.cli import main
from tests.conftest import REPO_ROOT

# What `logging.basicConfig` in main() would print on the real command's stderr.
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class Done:
    """A finished `classifr` command: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(home: Path, *args, cwd: Path | None = None) -> Done:
    """`classifr ARGS` with CLASSIFR_HOME=home, run in this process as `python -m classifr` runs it.

    main()'s return value is the exit status, and argparse's usage errors (SystemExit(2)) are
    caught as the interpreter would. stderr gets what the command printed plus the log records at
    WARNING and above, as the real command's logging.basicConfig would print them, so "one error
    line on stderr" still means one. configure_runtime()'s process-wide settings (torch threads,
    transformers verbosity) are restored afterwards, so this test process stays as it was.
    """
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)  # also makes main()'s basicConfig a no-op here
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    runtime = _runtime_state()
    try:
        with (
            mock.patch.dict(os.environ, {"CLASSIFR_HOME": str(home)}),
            contextlib.chdir(cwd or Path.cwd()),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                code = main([str(arg) for arg in args])
            except SystemExit as exit_:  # argparse: `sys.exit(main())` would exit the same way
                code = exit_.code
    finally:
        root.removeHandler(handler)
        _restore_runtime(runtime)
    return Done(code, out.getvalue(), err.getvalue())


def _runtime_state() -> tuple[int | None, tuple[int, bool] | None]:
    """Torch's thread count and transformers' verbosity and progress bars, where already imported
    (a library main() imports for the first time had no earlier state to keep)."""
    torch = sys.modules.get("torch")
    transformers_logging = sys.modules.get("transformers.utils.logging")
    return (
        torch.get_num_threads() if torch is not None else None,
        (transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled())
        if transformers_logging is not None else None,
    )


def _restore_runtime(state: tuple[int | None, tuple[int, bool] | None]) -> None:
    threads, transformers_state = state
    if threads is not None:
        sys.modules["torch"].set_num_threads(threads)
    if transformers_state is not None:
        transformers_logging = sys.modules["transformers.utils.logging"]
        verbosity, progress = transformers_state
        transformers_logging.set_verbosity(verbosity)
        (transformers_logging.enable_progress_bar if progress else transformers_logging.disable_progress_bar)()


def config_only_home(home: Path) -> Path:
    """A CLASSIFR_HOME whose registry holds a v1 (production) with only a 1000-label config.json:
    enough for the commands that never load the model (versions, promote, export's checks)."""
    from classifr.versions.registry import LocalRegistry

    def write(folder: Path) -> None:
        (folder / "config.json").write_text(json.dumps({"label_names": [f"class {i}" for i in range(1000)]}))

    LocalRegistry(home / "registry").publish(write, parent=None, aliases=["production"])
    return home


# --- the entry point, as a user runs it ----------------------------------------------------------


@pytest.mark.slow
def test_python_m_classifr_predict_json_on_a_real_photo_and_a_bad_file(fresh_home, sandal_photo, tmp_path):
    """`python -m classifr predict` on a good photo and a text file named .jpg: JSON for both, one
    error line on stderr and no traceback, exit 1."""
    bad = tmp_path / "not-a-photo.jpg"
    bad.write_text("hello")
    env = {**os.environ, "CLASSIFR_HOME": str(fresh_home)}
    done = subprocess.run([sys.executable, "-m", "classifr", "predict", str(sandal_photo), str(bad), "--top-k", "3", "--json"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1
    good, broken = json.loads(done.stdout)
    assert good["image"] == str(sandal_photo) and good["version"] == "v1"
    assert [p["label"] for p in good["predictions"]][0] == "sandal" and len(good["predictions"]) == 3
    assert good["predictions"][0]["score"] > 0.8
    assert broken["image"] == str(bad) and "not-a-photo.jpg" in broken["error"]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"classifr: error: {broken['error']}"]


# --- commands, in this process ----------------------------------------------------------------------


@pytest.mark.slow
def test_predict_text_output(fresh_home, sample_photos):
    done = run_cli(fresh_home, "predict", sample_photos["palace"], sample_photos["daisy"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "[v1]: palace" in lines[0] and "[v1]: daisy" in lines[1]


def test_missing_file_is_one_line_and_non_zero(tmp_path):
    """Nothing to classify: one error line, before any model is loaded (the home has no registry)."""
    done = run_cli(tmp_path / "home", "predict", tmp_path / "nope.png")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "nope.png" in done.stderr
    assert not (tmp_path / "home" / "registry").exists()


def test_versions_json_shape(tmp_path):
    home = config_only_home(tmp_path / "home")
    done = run_cli(home, "versions", "--json")
    assert done.returncode == 0, done.stderr
    [v1] = json.loads(done.stdout)
    assert {k: v1[k] for k in ("version", "aliases", "num_labels", "parent")} == {
        "version": "v1", "aliases": ["production"], "num_labels": 1000, "parent": None}
    assert v1["created_at"].endswith("Z")


def test_unknown_version_and_bad_flags(tmp_path):
    home = config_only_home(tmp_path / "home")
    done = run_cli(home, "promote", "v9")
    assert done.returncode == 1 and "v9" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    usage = run_cli(home, "predict", "x.jpg", "--top-k", "0")
    assert usage.returncode == 2 and "--top-k must be at least 1, got 0" in usage.stderr
    unknown = run_cli(home, "predict", "x.jpg", "--no-such-flag")  # argparse's own usage error
    assert unknown.returncode == 2 and "unrecognized arguments: --no-such-flag" in unknown.stderr


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam", "ig"])
def test_explain_writes_an_overlay_the_size_of_the_photo(fresh_home, sandal_photo, tmp_path, method):
    """--steps 8 instead of the default 32 (which also checks that --steps reaches the explainer): the test
    is about the written overlay and the summary; tests/test_explain.py checks 32 steps' precision."""
    from PIL import Image

    out = tmp_path / f"{method}.png"
    done = run_cli(fresh_home, "explain", sandal_photo, "--method", method, "--steps", "8", "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["method"] == method and summary["target"] == "sandal" and summary["version"] == "v1"
    assert summary["out"] == str(out)
    assert (summary["convergence_delta"] is not None) == (method == "ig")
    assert summary["settings"].startswith("8 steps") == (method == "ig")
    with Image.open(out) as written, Image.open(sandal_photo) as photo:
        assert written.size == photo.size == tuple(summary["size"])


@pytest.mark.slow
def test_explain_layers_and_bad_requests(fresh_home, sandal_photo, tmp_path):
    out = tmp_path / "layers.png"
    done = run_cli(fresh_home, "explain", sandal_photo, "--method", "layers", "--out", out)
    assert done.returncode == 0 and out.is_file() and "layers" in done.stdout
    unknown = run_cli(fresh_home, "explain", sandal_photo, "--target", "unicorn", "--out", out)
    assert unknown.returncode == 1 and "unknown label 'unicorn'" in unknown.stderr and "Traceback" not in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    bad_out = run_cli(fresh_home, "explain", sandal_photo, "--out", tmp_path / "x.gif")
    assert bad_out.returncode == 2 and "--out must end in .png" in bad_out.stderr
