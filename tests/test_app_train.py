"""Maintainers train, promote and roll back through the app's API; everyone else is refused."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.conftest import _free_port

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def maintainer_app(tmp_path_factory, project_home, clothing_dir):
    """The app with CLASSIFR_ADMIN_PASSWORD on a project holding 4 clothing labels, served in this
    process (the same serve() as `python app.py`; tests/test_app.py starts the real command)."""
    from classifr.core.config import Settings
    from classifr.data.dataset import Example, ProjectDataset
    from classifr.ui.app import serve

    home = tmp_path_factory.mktemp("maintainer-home")
    shutil.copytree(project_home / "registry", home / "registry")
    dataset = ProjectDataset(home / "dataset")
    for label in ("hat", "shoes", "pants", "dress"):
        photos = sorted((clothing_dir / "train" / label).glob("*.jpg"))[:25]
        dataset.add_many([Example(p, label) for p in photos], source="import")
    settings = Settings.from_env({
        "CLASSIFR_HOME": str(home), "GRADIO_SERVER_PORT": str(_free_port()), "CLASSIFR_NUM_THREADS": os.environ["CLASSIFR_NUM_THREADS"],
        "CLASSIFR_ADMIN_PASSWORD": PASSWORD, "CLASSIFR_ONNX_VERIFY_IMAGES": os.environ["CLASSIFR_ONNX_VERIFY_IMAGES"],
    })
    demo = serve(settings, block=False)
    try:
        yield {"url": demo.local_url, "home": home}
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(maintainer_app):
    from gradio_client import Client

    return Client(maintainer_app["url"], verbose=False)


@pytest.mark.parametrize("api, args", [("/train", (False, "always")), ("/promote", ("v1",)), ("/rollback", ())])
def test_maintainer_actions_refuse_a_wrong_password(client, api, args):
    with pytest.raises(Exception, match="Wrong maintainer password"):
        client.predict("guess", *args, api_name=api)


def test_train_in_the_background_then_serve_it_then_roll_back(client, maintainer_app, sandal_photo):
    from gradio_client import handle_file

    status = client.predict(PASSWORD, True, "always", api_name="/train")
    assert "Training" in status
    with pytest.raises(Exception, match="already going on"):
        client.predict(PASSWORD, True, "always", api_name="/train")  # one run at a time
    deadline = time.monotonic() + 600
    while "Training…" in status and time.monotonic() < deadline:
        time.sleep(2)
        status, table = client.predict(api_name="/training_status")
    assert "**v2** trained from v1" in status and "promoted" in status, status
    # After a promote the comparison is the previous production against the new one, each figure with its photo count.
    assert table["headers"] == ["measure", "previous production (v1)", "production (v2)"]
    accuracy = next(row for row in table["data"] if row[0] == "accuracy on held-out photos")
    assert accuracy[1] == "n/a" and accuracy[2].endswith(" photos"), accuracy
    _, result, _ = client.predict(handle_file(str(sandal_photo)), api_name="/predict")
    assert result["version"] == "v2" and result["predictions"][0]["label"] in {"hat", "shoes", "pants", "dress"}
    message, _ = client.predict(PASSWORD, api_name="/rollback")
    assert "Production is now **v1**" in message
    _, result, _ = client.predict(handle_file(str(sandal_photo)), api_name="/predict")
    assert result["version"] == "v1" and result["predictions"][0]["label"] == "sandal"


def test_a_run_can_be_cancelled_and_nothing_is_published(client, maintainer_app):
    before = sorted(p.name for p in (maintainer_app["home"] / "registry" / "versions").iterdir())
    client.predict(PASSWORD, False, "never", api_name="/train")
    assert "cancelled" in client.predict(PASSWORD, api_name="/cancel_training")
    status, _ = client.predict(api_name="/training_status")
    assert "cancelled" in status
    time.sleep(1)
    assert sorted(p.name for p in (maintainer_app["home"] / "registry" / "versions").iterdir()) == before
    with pytest.raises(Exception, match="no training run"):
        client.predict(PASSWORD, api_name="/cancel_training")


def test_external_datasets_for_a_run_are_one_per_line_and_never_options():
    import gradio as gr

    from classifr.ui.train import dataset_sources

    assert dataset_sources(" ../shared/datasets/cifar10 \n\n owner/name \n") == ["../shared/datasets/cifar10", "owner/name"]
    assert dataset_sources(None) == [] and dataset_sources("   ") == []
    with pytest.raises(gr.Error, match="cannot start with '-'"):
        dataset_sources("--promote\nalways")
