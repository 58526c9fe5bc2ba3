"""LabelSet: validation and append-only growth."""

from __future__ import annotations

import pytest

from classifr.core.errors import LabelError
from classifr.core.labels import LabelSet, normalize_label


@pytest.mark.parametrize(
    "bad, reason",
    [("", "empty"), ("   ", "empty"), ("a/b", "path separator"), ("a\\b", "path separator"),
     ("tab\there", "control"), ("x" * 65, "longer than 64"), (3, "must be a string")],
)
def test_bad_labels_are_refused_with_the_reason(bad, reason):
    with pytest.raises(LabelError, match=reason):
        normalize_label(bad)


def test_label_is_trimmed():
    assert normalize_label("  Rain boots \n".replace("\n", "")) == "Rain boots"


def test_adding_labels_never_renumbers_existing_ones():
    base = LabelSet(("cat", "dog"))
    grown = base.with_added(["bird", " Dog ", "CAT", "fish", "bird"])
    assert grown.names == ("cat", "dog", "bird", "fish")
    assert all(grown.id_of(name) == i for i, name in enumerate(base.names))


def test_duplicates_ignoring_case_are_refused():
    with pytest.raises(LabelError, match="duplicate label 'Cat'"):
        LabelSet(("cat", "Cat"))


def test_round_trip_through_id2label_with_string_keys():
    labels = LabelSet(("a", "b", "c"))
    as_json = {str(k): v for k, v in labels.id2label.items()}
    assert LabelSet.from_id2label(as_json) == labels
    assert labels.label2id == {"a": 0, "b": 1, "c": 2}


def test_gaps_in_ids_are_refused():
    with pytest.raises(LabelError, match="without gaps"):
        LabelSet.from_id2label({0: "a", 2: "c"})


def test_unknown_label_is_named():
    with pytest.raises(LabelError, match="unknown label 'zebra'"):
        LabelSet(("cat",)).id_of("zebra")


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_checkpoint_labels_match_the_loaded_model(default_model_dir, tiny_vit_dir, default_classifier):
    """Read from config.json alone: timm's label_names list and a ViT's id2label."""
    from classifr.core.labels import checkpoint_labels

    assert checkpoint_labels(default_model_dir) == default_classifier.labels
    assert list(checkpoint_labels(tiny_vit_dir)) == ["cat", "dog", "bird"]


def test_checkpoint_labels_of_a_folder_without_config(tmp_path):
    from classifr.core.labels import checkpoint_labels

    with pytest.raises(LabelError, match="cannot read the labels"):
        checkpoint_labels(tmp_path)


KNOWN = ["hat", "cowboy hat", "T-shirt", "Shoe", "dress", "boxes", "berry", "longsleeve", "shirt"]


@pytest.mark.parametrize(
    "typed, near",
    [
        ("Hat", ["hat", "cowboy hat"]),  # same ignoring case; its words within "cowboy hat"
        ("hats", ["hat", "cowboy hat"]),  # plural
        ("shoes", ["Shoe"]),
        ("dresses", ["dress"]),
        ("box", ["boxes"]),
        ("berries", ["berry"]),
        ("tshirt", ["T-shirt"]),  # spacing and hyphens
        ("Cowboy Hats", ["hat", "cowboy hat"]),
        ("straw hat", ["hat"]),
        ("skirt", []),
        ("long sleeve", ["longsleeve"]),  # the same letters, spaced differently
        ("??", []),
    ],
)
def test_near_duplicates_by_case_plural_and_contained_words(typed, near):
    from classifr.core.labels import near_duplicates

    assert near_duplicates(typed, KNOWN) == near


def test_near_duplicates_leave_out_the_exact_spelling_and_short_stems():
    from classifr.core.labels import near_duplicates

    assert near_duplicates("hat", ["hat", "hats", "hat"]) == ["hats"]
    assert near_duplicates("glass", ["glas"]) == []  # "glass" ends in "ss": no plural to strip
    assert near_duplicates("glasses", ["glass"]) == ["glass"]
    assert near_duplicates("??", ["??", "?"]) == []
