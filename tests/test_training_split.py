"""The held-out split (classifr.data.split): stratified by label, a minimum per label, stable as photos are added."""

from __future__ import annotations

import hashlib

import pytest

from classifr.core.errors import ClassifrError
from classifr.data.split import MIN_HELD_OUT, TEST_PERCENT, bucket_of, held_out, held_out_of_label, photos_to_measure, split_of


@pytest.fixture(scope="module")
def photo_hashes(clothing_dir) -> dict[str, list[str]]:
    """The SHA-256 of real photos, per label, in file-name order (the order a contributor might add them)."""
    return {
        label: [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((clothing_dir / "train" / label).glob("*.jpg"))[:120]]
        for label in ("hat", "shirt", "skirt")
    }


def test_every_label_with_25_photos_has_at_least_5_held_out_and_small_labels_20_percent(photo_hashes):
    for shas in photo_hashes.values():
        for count in range(1, 121):
            held = held_out_of_label(shas[:count])
            assert len(held) >= min(MIN_HELD_OUT, count // 5), (count, len(held))
            assert len(held) < count or count == 0  # a label always keeps photos to train on
            if count >= 25:
                assert len(held) >= MIN_HELD_OUT


def test_the_rows_test_share_is_always_held_out_and_large_labels_hold_out_about_15_percent(photo_hashes):
    for shas in photo_hashes.values():
        held = set(held_out_of_label(shas))
        assert {sha for sha in shas if split_of(sha) == "test"} <= held
        assert 0.08 < len(held) / len(shas) < 0.25  # 120 photos: the hash share, about 15%
    assert all(0 <= bucket_of(sha) < 100 for sha in photo_hashes["hat"]) and TEST_PERCENT == 15


def test_adding_photos_one_at_a_time_rarely_moves_a_photo_already_there(photo_hashes):
    """Per label, photos 1..120 added one by one: how often a photo already in the dataset changes side."""
    moves = additions = 0
    for shas in photo_hashes.values():
        before = set()
        for count in range(1, len(shas) + 1):
            now = set(held_out_of_label(shas[:count]))
            existing = set(shas[: count - 1])
            moves += len((before ^ now) & existing)
            additions += 1
            before = now
        # Once a label has MIN_HELD_OUT photos in the hash share, nothing ever moves again.
        late = set(held_out_of_label(shas[:100])) & set(shas[:100])
        assert late == set(held_out_of_label(shas)) & set(shas[:100])
    # Measured on these 3 x 120 photos: 19 moves in 360 additions, none for shirt, the last at hat's 68th photo.
    assert moves / additions < 0.1


def test_held_out_is_decided_per_label_and_by_content_only(photo_hashes):
    by_label = {label: shas[:30] for label, shas in photo_hashes.items()}
    shuffled = {label: list(reversed(shas)) for label, shas in reversed(list(by_label.items()))}
    assert held_out(by_label) == held_out(shuffled)
    assert held_out(by_label) == set().union(*(held_out_of_label(shas) for shas in by_label.values()))


def test_photos_to_measure_and_a_bad_hash():
    assert [photos_to_measure(n) for n in (0, 3, 20, 24, 25, 200)] == [25, 22, 5, 1, 0, 0]
    with pytest.raises(ClassifrError, match="not a SHA-256 hex digest: 'zz"):
        bucket_of("zz" * 32)


def test_the_dataset_counts_the_photos_training_holds_out(clothing_dir, tmp_path):
    """12 hats whose hashes put none in the rows' test share: training still holds out 2, and the
    category's counts say so (its `by_split` keeps what the rows say)."""
    from classifr.data.dataset import Example, ProjectDataset
    from training.data import collect

    photos = [p for p in sorted((clothing_dir / "train" / "hat").glob("*.jpg"))
              if split_of(hashlib.sha256(p.read_bytes()).hexdigest()) == "train"][:12]
    dataset = ProjectDataset(tmp_path / "dataset")
    results = dataset.add_many([Example(p, "hat") for p in photos], source="upload")
    assert [r.split for r in results] == ["train"] * 12  # stored bytes hash as the files do (no EXIF in these)
    [hat] = dataset.categories()
    assert hat.by_split == {"train": 12} and hat.held_out == 2
    data = collect([("project", dataset)])
    assert len(data.test) == 2 and len(data.train) == 10
    assert data.held_out_report()["too_few"] == [{"label": "hat", "held_out": 2, "images": 12, "add": 13}]
