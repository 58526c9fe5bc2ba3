"""Settings from the environment: defaults and errors that name the bad value."""

from __future__ import annotations


import pytest

from classifr.core.config import Settings
from classifr.core.errors import ConfigError


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.home == tmp_path / "classifr-home"
    assert settings.server_port == 7860 and settings.top_k == 5 and settings.model is None
    assert settings.registry_dir == settings.home / "registry"
    assert settings.dataset_dir == settings.home / "dataset" and settings.dataset_repo is None
    assert settings.dataset_sync_minutes == 10 and settings.dataset_license == "cc-by-4.0"


def test_values_from_env(tmp_path):
    env = {"CLASSIFR_HOME": str(tmp_path), "GRADIO_SERVER_PORT": "9001", "CLASSIFR_TOP_K": "3",
           "CLASSIFR_MODEL": "google/vit-base-patch16-224", "CLASSIFR_MAX_IMAGE_MB": "2"}
    settings = Settings.from_env(env)
    assert settings.home == tmp_path and settings.server_port == 9001 and settings.top_k == 3
    assert settings.model == "google/vit-base-patch16-224" and settings.max_image_bytes == 2 * 1024 * 1024


@pytest.mark.parametrize(
    "env, message",
    [({"GRADIO_SERVER_PORT": "http"}, "GRADIO_SERVER_PORT must be an integer, got 'http'"),
     ({"GRADIO_SERVER_PORT": "70000"}, "between 1 and 65535, got 70000"),
     ({"CLASSIFR_TOP_K": "0"}, "CLASSIFR_TOP_K must be between 1 and 100, got 0"),
     ({"CLASSIFR_EXAMPLES_DIR": "/no/such/folder"}, "CLASSIFR_EXAMPLES_DIR must be an existing folder"),
     ({"CLASSIFR_DATASET_REPO": "just-a-name"}, "CLASSIFR_DATASET_REPO must be a Hub repo id like 'owner/name'"),
     ({"CLASSIFR_DATASET_SYNC_MINUTES": "0"}, "CLASSIFR_DATASET_SYNC_MINUTES must be between 1 and 1440, got 0"),
     ({"CLASSIFR_DATASET_LICENSE": "cc by\n4"}, "CLASSIFR_DATASET_LICENSE must be a licence identifier")],
)
def test_bad_values_are_named(env, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings.from_env({"CLASSIFR_HOME": str(tmp_path), **env})


def test_home_that_is_a_file_is_refused(tmp_path):
    file = tmp_path / "home"
    file.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        Settings.from_env({"CLASSIFR_HOME": str(file)})


def test_registry_repo_must_be_a_repo_id(tmp_path):
    with pytest.raises(ConfigError, match="CLASSIFR_REGISTRY_REPO must be a Hub repo id like 'owner/name', got 'oops'"):
        Settings.from_env({"CLASSIFR_HOME": str(tmp_path), "CLASSIFR_REGISTRY_REPO": "oops"})


def test_token_is_not_shown_in_repr(tmp_path):
    settings = Settings.from_env({"CLASSIFR_HOME": str(tmp_path), "HF_TOKEN": "hf_secret"})
    assert settings.hf_token == "hf_secret" and "hf_secret" not in repr(settings)
