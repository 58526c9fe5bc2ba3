"""Shared fixtures: real data from ../shared/datasets, the real default model, tiny random models.

Everything is built in pytest's temp folders; nothing is written to the repo or downloaded.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"
CLOTHING = SHARED_DATASETS / "clothing-small"

# Tests never reach the Hub; a path that tries fails loudly instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# One PyTorch (OpenMP) thread in the test process and the apps and scripts it starts: on 2 shared
# cores two threads wait on each other whenever another process holds a core (one learning test
# took 14-47 s with two threads, 2.6 s with one; docs/testing.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("CLASSIFR_NUM_THREADS", "1")
# v1's ONNX export is checked on 16 sample photos instead of 200 wherever the tests build it through
# Settings (the app and CLI subprocesses too); tests/test_onnx_export.py checks the full 200.
TEST_ONNX_VERIFY_IMAGES = 16
os.environ.setdefault("CLASSIFR_ONNX_VERIFY_IMAGES", str(TEST_ONNX_VERIFY_IMAGES))


def pytest_configure(config: pytest.Config) -> None:
    if not CLOTHING.is_dir():
        raise pytest.UsageError(f"the real test photos are missing: {CLOTHING} (../shared/datasets beside the repo)")


@pytest.fixture(scope="session")
def clothing_dir() -> Path:
    return CLOTHING


@pytest.fixture(scope="session")
def sandal_photo() -> Path:
    """A shoe photo from clothing-small's test split: the default model says 'sandal' (p about 0.9)."""
    return next((CLOTHING / "test" / "shoes").glob("07d88b75-*.jpg"))


@pytest.fixture(scope="session")
def sample_photos() -> dict[str, Path]:
    """scikit-learn's two sample photos: a palace (china.jpg) and a daisy (flower.jpg)."""
    from importlib import resources

    folder = Path(str(resources.files("sklearn.datasets") / "images"))
    return {"palace": folder / "china.jpg", "daisy": folder / "flower.jpg"}


@pytest.fixture(scope="session")
def default_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real default model (EfficientNet-Lite0, ImageNet-1k) written as v1 would be."""
    from classifr.app.bootstrap import write_default_version

    folder = tmp_path_factory.mktemp("default-model")
    write_default_version(folder)
    return folder


@pytest.fixture(scope="session")
def default_classifier(default_model_dir: Path):
    from classifr.inference.classifier import Classifier

    return Classifier.load(default_model_dir, version="v1")


@pytest.fixture(scope="session")
def project_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CLASSIFR_HOME whose registry holds the real bootstrapped v1, built once per session (read-only)."""
    from classifr.app.bootstrap import embedded_default_version
    from classifr.app.project import open_local_registry

    home = tmp_path_factory.mktemp("classifr-home")
    open_local_registry(home / "registry", default_version=embedded_default_version(verify_images=TEST_ONNX_VERIFY_IMAGES))
    return home


@pytest.fixture
def fresh_home(tmp_path: Path, project_home: Path) -> Path:
    """A CLASSIFR_HOME with an empty dataset whose registry is the shared bootstrapped one (read only)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "registry").symlink_to(project_home / "registry", target_is_directory=True)
    return home


@pytest.fixture
def own_home(tmp_path: Path, project_home: Path) -> Path:
    """A CLASSIFR_HOME with its own copy of the bootstrapped registry, for tests that publish and promote."""
    import shutil

    home = tmp_path / "own-home"
    home.mkdir()
    shutil.copytree(project_home / "registry", home / "registry")
    return home


@pytest.fixture(scope="session")
def tiny_default_version(tiny_vit_dir: Path):
    """A DefaultVersion that publishes the tiny random ViT as v1: a whole project in well under a second."""
    import shutil

    from classifr.app.bootstrap import DefaultVersion

    def write(folder: Path) -> None:
        shutil.copytree(tiny_vit_dir, folder, dirs_exist_ok=True)

    return DefaultVersion(write=write, metadata={"source": "tests: tiny random ViT"}, description="a tiny random ViT")


def _save_tiny(folder: Path, model, processor) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer ViT with 3 labels, saved like a Hub checkpoint."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    labels = {0: "cat", 1: "dog", 2: "bird"}
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, id2label=labels, label2id={v: k for k, v in labels.items()},
    )
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    return _save_tiny(tmp_path_factory.mktemp("tiny-vit"), ViTForImageClassification(config), processor)


@pytest.fixture(scope="session")
def tiny_convnext_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny ConvNeXt with 4 labels and the crop_pct preprocessing."""
    import torch
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

    torch.manual_seed(0)
    labels = {0: "shirt", 1: "pants", 2: "shoes", 3: "hat"}
    config = ConvNextConfig(
        num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=64,
        id2label=labels, label2id={v: k for k, v in labels.items()},
    )
    processor = ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.875)
    return _save_tiny(tmp_path_factory.mktemp("tiny-convnext"), ConvNextForImageClassification(config), processor)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served_app(home: Path, *, extra_env: dict[str, str] | None = None, ready_path: str = ""):
    """`python app.py` as a user starts it on `home`; yields {url, process, log, home} once
    `ready_path` (the page by default, or e.g. "health") answers 200, and stops it afterwards."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    log = home / "app.log"
    env = {**os.environ, "CLASSIFR_HOME": str(home), "GRADIO_SERVER_PORT": str(port), **(extra_env or {})}
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + ready_path, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not answer on {url}{ready_path} within 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"url": url, "process": process, "log": log, "home": home}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def running_app(tmp_path_factory: pytest.TempPathFactory):
    """`python app.py` as a user starts it, on an empty CLASSIFR_HOME; yields its URL."""
    with served_app(tmp_path_factory.mktemp("app-home")) as app:
        yield app


MAINTAINER_PASSWORD = "a maintainer's password"


@pytest.fixture
def maintained_service(tmp_path, tiny_default_version):
    """A service on the tiny ViT project with CLASSIFR_ADMIN_PASSWORD = MAINTAINER_PASSWORD."""
    from classifr.app.project import open_service
    from classifr.core.config import Settings

    settings = Settings(home=tmp_path / "home", num_threads=1, backend="torch", admin_password=MAINTAINER_PASSWORD)
    service = open_service(settings, default_version=tiny_default_version)
    yield service
    service.close()


@pytest.fixture
def tiny_api(tmp_path, tiny_default_version):
    """FastAPI's test client on the /v1 app of a tiny-ViT project (docs/api.md); `.service` is its service."""
    from fastapi.testclient import TestClient

    from classifr.api.app import build_api, close_api
    from classifr.app.project import open_service
    from classifr.core.config import Settings

    settings = Settings(home=tmp_path / "home", num_threads=1, backend="torch", api_rate_limit=0, api_workers=1)
    service = open_service(settings, default_version=tiny_default_version)
    api = build_api(service)
    try:
        with TestClient(api) as client:
            client.service = service
            yield client
    finally:
        close_api(api)
        service.close()
