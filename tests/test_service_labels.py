"""ClassifrService.check_new_label: what storing a typed label would do, before anything is stored."""

from __future__ import annotations

import pytest

from classifr.app.project import open_service
from classifr.core.config import Settings
from classifr.core.errors import LabelError


@pytest.fixture
def service(tmp_path, tiny_default_version):
    """A project on the tiny ViT: the model knows cat, dog and bird."""
    service = open_service(Settings(home=tmp_path / "home", num_threads=1, backend="torch"), default_version=tiny_default_version)
    yield service
    service.close()


def test_a_known_label_is_found_ignoring_case(service):
    assert service.check_new_label("  DOG ") == {"label": "DOG", "existing": "dog", "near": []}


def test_a_new_label_names_its_near_duplicates_among_model_labels_and_categories(service):
    service.create_category("cowboy hat")
    assert service.check_new_label("hats") == {"label": "hats", "existing": None, "near": ["cowboy hat"]}
    assert service.check_new_label("Birds") == {"label": "Birds", "existing": None, "near": ["bird"]}
    assert service.check_new_label("Cowboy Hat")["existing"] == "cowboy hat"
    assert service.check_new_label("Cowboy Hat")["near"] == []  # the existing spelling is not a near-duplicate
    assert service.check_new_label("fish") == {"label": "fish", "existing": None, "near": []}


def test_checking_stores_nothing(service):
    service.check_new_label("zebra")
    assert "zebra" not in service.label_choices()
    assert not service.dataset.categories_path.exists()


@pytest.mark.parametrize("bad, reason", [("", "empty"), ("a/b", "path separator"), ("<b>", "'<' or '>'")])
def test_an_invalid_name_is_refused_naming_it(service, bad, reason):
    with pytest.raises(LabelError, match=reason):
        service.check_new_label(bad)
