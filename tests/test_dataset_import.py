"""`classifr dataset import` on real data: the clothing photos as an imagefolder, CIFAR-10 as
Parquet, a Hub dataset through an injected loader, and broken sources. All offline; every
`datasets` cache goes to pytest's temp folder."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from classifr.core.errors import ClassifrError
from classifr.core.images import metadata_free_encoding, read_image
from classifr.data.dataset import Example, ProjectDataset
from classifr.data.importing import ImportReport, import_dataset
from tests.conftest import SHARED_DATASETS

CIFAR = SHARED_DATASETS / "cifar10"
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def dataset(tmp_path) -> ProjectDataset:
    return ProjectDataset(tmp_path / "dataset")


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha_as_stored(data: bytes) -> str:
    """The hash a source image gets in the dataset: that of its metadata-free encoding (docs/privacy.md)."""
    return _sha(metadata_free_encoding(read_image(data))[0])


def _stored(dataset: ProjectDataset) -> dict[str, str]:
    """sha256 of each stored file's bytes -> its row's label (checks the name is the hash too)."""
    stored = {}
    for row in dataset.rows():
        digest = _sha((dataset.root / row.file_name).read_bytes())
        assert digest == row.sha256
        stored[digest] = row.label
    return stored


def _photos(folder: Path) -> dict[str, str]:
    """sha256 as stored -> label folder for every JPEG under `folder` (…/<label>/<name>.jpg)."""
    return {_sha_as_stored(p.read_bytes()): p.parent.name for p in folder.rglob("*.jpg")}


def _copy_photos(clothing_dir: Path, target: Path, label: str, count: int, *, offset: int = 0, split: str = "train") -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    photos = sorted((clothing_dir / split / label).glob("*.jpg"))[offset : offset + count]
    return [Path(shutil.copy(photo, target / photo.name)) for photo in photos]


# --- imagefolder ---------------------------------------------------------------------------------


@pytest.mark.slow  # about 23 s on 2 cores: two imports of 3,068 photos and a read back
def test_clothing_folder_imports_every_photo_once(dataset, cache, clothing_dir):
    """All 372 photos of the test folder (10 labels; benchmarks/dataset.py imports the 3,068 of train):
    counts per label equal the files per folder, the stored files are the originals without
    metadata (docs/privacy.md), a second import
    adds nothing, and load_dataset reads the result back."""
    train = clothing_dir / "test"
    expected = Counter({folder.name: len(list(folder.glob("*.jpg"))) for folder in train.iterdir()})
    assert sum(expected.values()) == 372

    report = import_dataset(dataset, str(train), cache_dir=cache, progress=False)

    assert (report.kind, report.image_column, report.label_column, report.splits) == ("imagefolder", "image", "label", ("train",))
    assert (report.total, report.added, report.duplicates, report.rejected) == (372, 372, 0, 0)
    assert report.labels == dict(expected)
    assert dataset.stats()["by_label"] == dict(expected) and dataset.stats()["by_source"] == {"import": 372}
    assert _stored(dataset) == _photos(train)
    assert any("split" in note for note in report.notes)

    again = import_dataset(dataset, str(train), cache_dir=cache, progress=False)
    assert (again.total, again.added, again.duplicates, again.rejected) == (372, 0, 372, 0)
    assert len(dataset.rows()) == 372

    loaded = datasets.load_dataset("imagefolder", data_dir=str(dataset.root), cache_dir=str(cache / "readback"))["train"]
    assert loaded.num_rows == 372 and Counter(loaded["label"]) == expected


def _small_clothing_root(clothing_dir: Path, target: Path, per_split: dict[str, int]) -> Path:
    """clothing-small's layout (split folders, its 10 label folders in each) with the first N real
    photos of each label: `datasets` builds every split of a root it is given, so the whole root
    (3,781 photos) would cost seconds that the split and limit logic does not need."""
    for split, count in per_split.items():
        for folder in sorted(p for p in (clothing_dir / split).iterdir() if p.is_dir()):
            _copy_photos(clothing_dir, target / split / folder.name, folder.name, count, split=split)
    return target


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_clothing_root_one_split_with_a_limit(dataset, cache, clothing_dir, tmp_path):
    """A root folder like clothing-small's (train/validation/test inside; here 3 / 8 / 3 real photos
    per label) with split="validation" and limit=40: 40 of its 80 validation photos, the same 40 on a
    second run (so all duplicates), none from the other splits."""
    root = _small_clothing_root(clothing_dir, tmp_path / "clothing", {"train": 3, "validation": 8, "test": 3})
    report = import_dataset(dataset, root, split="validation", limit=40, cache_dir=cache, progress=False)

    assert report.splits == ("validation",) and (report.total, report.added, report.rejected) == (40, 40, 0)
    stored = _stored(dataset)
    validation = _photos(root / "validation")
    assert len(validation) == 80 and not set(validation) & (set(_photos(root / "train")) | set(_photos(root / "test")))
    assert len(stored) == 40 and all(validation.get(sha) == label for sha, label in stored.items())
    assert len(report.labels) > 3  # a sample across the split, not the first label folder
    assert any("limit 40" in note for note in report.notes)

    again = import_dataset(dataset, root, split="validation", limit=40, cache_dir=cache, progress=False)
    assert (again.added, again.duplicates) == (0, 40)


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_an_unknown_split_names_the_ones_there(dataset, cache):
    """split="validation" on the CIFAR-10 folder, which has train and test: one error naming both."""
    with pytest.raises(ClassifrError, match=r"no split 'validation'; its splits are train, test$"):
        import_dataset(dataset, CIFAR, split="validation", cache_dir=cache, progress=False)
    assert dataset.rows() == []


def test_a_project_dataset_folder_with_metadata_jsonl_imports_with_its_labels(dataset, cache, clothing_dir, tmp_path, capsys):
    """Another project's dataset folder (metadata.jsonl with a string `label` column) goes in with
    the same files and labels; with progress on, a tqdm bar counting "img" goes to stderr."""
    other = ProjectDataset(tmp_path / "other")
    photos = [
        *_copy_photos(clothing_dir, tmp_path / "src" / "hat", "hat", 3),
        *_copy_photos(clothing_dir, tmp_path / "src" / "skirt", "skirt", 3),
    ]
    other.add_many([Example(p, p.parent.name) for p in photos], source="upload")

    report = import_dataset(dataset, other.root, cache_dir=cache, progress=True)

    assert (report.kind, report.label_column, report.added) == ("imagefolder", "label", 6)
    assert _stored(dataset) == _stored(other)
    err = capsys.readouterr().err
    assert "6/6" in err and "img" in err


# --- Parquet -------------------------------------------------------------------------------------


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_cifar10_parquet_folder_with_a_limit_keeps_the_original_pictures(dataset, cache):
    """The CIFAR-10 folder (train.parquet, test.parquet; an Image struct column `img` and a
    ClassLabel `label`), test split, limit=200: ids become names and the stored files are the
    Parquet's own images (without metadata), each with its row's label."""
    table = pq.read_table(CIFAR / "test.parquet")
    images, labels = table["img"].to_pylist(), table["label"].to_pylist()
    source = {_sha_as_stored(img["bytes"]): CIFAR_NAMES[label] for img, label in zip(images, labels, strict=True)}

    report = import_dataset(dataset, CIFAR, split="test", limit=200, cache_dir=cache, progress=False)

    assert (report.kind, report.image_column, report.label_column, report.splits) == ("parquet", "img", "label", ("test",))
    assert (report.total, report.added, report.rejected) == (200, 200, 0)
    stored = _stored(dataset)
    assert len(stored) == 200 and all(source[sha] == label for sha, label in stored.items())
    assert set(report.labels) == set(CIFAR_NAMES)  # a sample of the whole split, every class in it
    assert all(row.file_name.endswith(".jpg") for row in dataset.rows())


def test_parquet_files_by_path_or_list_and_limit_across_splits(dataset, cache):
    """One Parquet file given as a Path, then both files as a list: one split each time, and a
    limit of 30 over the two files' 60,000 rows."""
    single = import_dataset(dataset, CIFAR / "test.parquet", limit=10, cache_dir=cache, progress=False)
    assert (single.kind, single.added) == ("parquet", 10)

    both = import_dataset(dataset, [CIFAR / "train.parquet", CIFAR / "test.parquet"], limit=30, cache_dir=cache, progress=False)
    assert both.kind == "parquet" and both.total == 30 and both.added + both.duplicates == 30
    assert "60000 rows" in " ".join(both.notes)


def test_plain_parquet_columns_are_found_by_name(dataset, cache, clothing_dir, tmp_path):
    """A Parquet file without Hugging Face metadata: binary `photo` and string `category` columns
    are found by name; an int `label` column (no class names) is refused, listing the columns."""
    photos = sorted((clothing_dir / "train" / "shoes").glob("*.jpg"))[:4]
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "photo": [p.read_bytes() for p in photos], "category": ["shoes"] * 4}), plain)

    report = import_dataset(dataset, plain, cache_dir=cache, progress=False)

    assert (report.image_column, report.label_column, report.added) == ("photo", "category", 4)
    assert set(_stored(dataset)) == {_sha_as_stored(p.read_bytes()) for p in photos}

    ints = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"image": [photos[0].read_bytes()], "label": [3]}), ints)
    with pytest.raises(ClassifrError, match=r"no label column.*its columns are image \(binary\), label \(int64\)"):
        import_dataset(dataset, ints, cache_dir=cache, progress=False)


# --- the Hub -------------------------------------------------------------------------------------


def _clothes_dict(clothing_dir: Path) -> tuple[datasets.DatasetDict, dict[str, str]]:
    """A DatasetDict as load_dataset returns one for a Hub repo: embedded bytes, ClassLabel."""
    names = ["hat", "skirt"]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names), "note": datasets.Value("string")})
    splits, expected = {}, {}
    for split, offset in (("train", 0), ("test", 3)):
        rows = {"image": [], "label": [], "note": []}
        for label_id, name in enumerate(names):
            for photo in sorted((clothing_dir / "train" / name).glob("*.jpg"))[offset : offset + 3]:
                rows["image"].append({"bytes": photo.read_bytes(), "path": photo.name})
                rows["label"].append(label_id)
                rows["note"].append("x")
                expected[_sha_as_stored(photo.read_bytes())] = name
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    return datasets.DatasetDict(splits), expected


def test_a_hub_id_goes_through_the_loader_with_the_cache_dir(dataset, cache, clothing_dir):
    """"someone/clothes" with a loader that returns a real in-memory DatasetDict (2 splits, Image
    + ClassLabel + an extra column): called once with the id and cache_dir; every split imported
    with names for the ids and the embedded images stored (without metadata)."""
    clothes, expected = _clothes_dict(clothing_dir)
    calls = []

    def loader(*args, **kwargs):
        calls.append((args, kwargs))
        return clothes

    report = import_dataset(dataset, "someone/clothes", cache_dir=cache, loader=loader, progress=False)

    assert calls == [(("someone/clothes",), {"cache_dir": str(cache)})]
    assert (report.kind, report.source, report.splits) == ("hub", "someone/clothes", ("train", "test"))
    assert (report.added, report.labels) == (12, {"hat": 6, "skirt": 6})
    assert _stored(dataset) == expected
    assert json.loads(json.dumps(report.to_json()))["added"] == 12


def test_a_hub_load_failure_is_one_line_with_the_id_and_reason(dataset, cache):
    """A loader that fails as load_dataset does offline (a multi-line ConnectionError): one
    ClassifrError line with the id and the reason; nothing added."""

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nobody/nothing' on the Hub\n(OfflineModeIsEnabled)")

    with pytest.raises(ClassifrError) as caught:
        import_dataset(dataset, "nobody/nothing", cache_dir=cache, loader=offline, progress=False)
    message = str(caught.value)
    assert "\n" not in message and "'nobody/nothing'" in message and "OfflineModeIsEnabled" in message
    assert dataset.rows() == []


def test_rows_without_an_image_or_a_label_are_rejected_and_the_rest_go_in(dataset, cache, clothing_dir):
    """A loader returning a single Dataset whose rows include no image, label -1 (ClassLabel's
    "none") and an id past the names: those three rejected with reasons, the good row added."""
    photo = sorted((clothing_dir / "train" / "hat").glob("*.jpg"))[0]
    good = {"bytes": photo.read_bytes(), "path": "good.jpg"}
    plain = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    table = datasets.Dataset.from_dict({"image": [None, good, good, good], "label": [0, -1, 0, 5]}, features=plain).data
    # ClassLabel refuses to encode id 5, so the features are put on the finished table, as a
    # Parquet file written by other tools could have them.
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["hat"])})
    messy = datasets.Dataset(table, info=datasets.DatasetInfo(features=features))

    report = import_dataset(dataset, "someone/messy", cache_dir=cache, loader=lambda *a, **k: messy, progress=False)

    assert (report.total, report.added, report.rejected) == (4, 1, 3)
    reasons = [example["reason"] for example in report.rejected_examples]
    assert reasons == [
        "train[0] has no image (neither bytes nor a path)",
        "train[1] good.jpg has no label",
        "train[3] good.jpg has label id 5, not one of the 1 classes of 'label'",
    ]


# --- bad input -----------------------------------------------------------------------------------


def test_broken_image_files_are_rejected_with_reasons_and_nothing_is_written_for_them(dataset, cache, clothing_dir, tmp_path):
    """A folder of two labels where one holds a text file named .jpg and a JPEG cut in half:
    both rejected with the file and the reason, the real photos added, no file or row for them."""
    source = tmp_path / "source"
    good = _copy_photos(clothing_dir, source / "hat", "hat", 2) + _copy_photos(clothing_dir, source / "skirt", "skirt", 2)
    (source / "hat" / "text.jpg").write_text("this is not a photo\n")
    whole = good[0].read_bytes()
    (source / "skirt" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])

    report = import_dataset(dataset, source, cache_dir=cache, progress=False)

    assert (report.total, report.added, report.rejected) == (6, 4, 2)
    reasons = {example["name"]: example["reason"] for example in report.rejected_examples}
    assert "not an image" in reasons["hat/text.jpg"] and "truncated" in reasons["skirt/truncated.jpg"]
    assert set(_stored(dataset)) == {_sha_as_stored(p.read_bytes()) for p in good}
    assert len([p for p in (dataset.root / "images").rglob("*") if p.is_file()]) == 4
    assert not any((dataset.root / ".tmp").iterdir())


def test_bad_label_folder_names_are_rejected_per_image(dataset, cache, clothing_dir, tmp_path):
    """Label folders named with a control character (BEL), HTML markup `<b>`, and 70 characters,
    next to a good `shirt` folder: each of their images rejected with the label's problem, no
    category created for them, the shirts added."""
    source = tmp_path / "source"
    shirts = _copy_photos(clothing_dir, source / "shirt", "shirt", 2)
    for offset, folder in enumerate(["bad\x07bell", "<b>", "x" * 70]):
        _copy_photos(clothing_dir, source / folder, "shirt", 1, offset=10 + offset)

    report = import_dataset(dataset, source, cache_dir=cache, progress=False)

    assert (report.total, report.added, report.rejected, report.labels) == (5, 2, 3, {"shirt": 2})
    reasons = " | ".join(example["reason"] for example in report.rejected_examples)
    assert "control characters" in reasons and "'<' or '>'" in reasons and "longer than 64" in reasons
    assert [c.name for c in dataset.categories()] == ["shirt"]
    assert set(_stored(dataset)) == {_sha_as_stored(p.read_bytes()) for p in shirts}
    assert all(example["name"].isprintable() for example in report.rejected_examples)


def test_a_wrong_column_name_lists_the_columns(dataset, cache):
    """--image-column pixels and --label-column fine on CIFAR-10's test file: errors that list
    img (Image) and label (ClassLabel); --image-column label (not images) is refused too."""
    test_file = CIFAR / "test.parquet"
    columns = r"its columns are img \(Image\), label \(ClassLabel\)"
    with pytest.raises(ClassifrError, match=r"--image-column 'pixels' is not a column .*" + columns):
        import_dataset(dataset, test_file, image_column="pixels", cache_dir=cache, progress=False)
    with pytest.raises(ClassifrError, match=r"--label-column 'fine' is not a column"):
        import_dataset(dataset, test_file, label_column="fine", cache_dir=cache, progress=False)
    with pytest.raises(ClassifrError, match=r"image column 'label' holds ClassLabel, not images"):
        import_dataset(dataset, test_file, image_column="label", cache_dir=cache, progress=False)
    assert dataset.rows() == []


@pytest.mark.parametrize("missing", ["no-such-folder", "./data/train.parquet", "/nowhere/at/all"])
def test_a_missing_path_is_an_error_naming_it_and_nothing_is_loaded(dataset, cache, tmp_path, monkeypatch, missing):
    """Paths that do not exist and are not owner/name Hub ids (a bare name, a relative Parquet
    path, an absolute folder): ClassifrError naming the path; the loader is never called."""
    monkeypatch.chdir(tmp_path)

    def loader(*args, **kwargs):
        raise AssertionError("nothing should be loaded")

    with pytest.raises(ClassifrError, match=f"no such file or folder: '{missing}'"):
        import_dataset(dataset, missing, cache_dir=cache, loader=loader, progress=False)


def test_a_folder_without_label_folders_says_why(dataset, cache, clothing_dir, tmp_path):
    """Photos directly in the folder (no <label>/ folders): an error that there is no label
    column, with the imagefolder rule, instead of importing them unlabelled."""
    _copy_photos(clothing_dir, tmp_path / "flat", "hat", 3)
    with pytest.raises(ClassifrError, match=r"no label column \(imagefolder takes labels from folder names"):
        import_dataset(dataset, tmp_path / "flat", cache_dir=cache, progress=False)


def test_the_report_is_json_ready(dataset, cache, clothing_dir, tmp_path):
    """to_json() gives plain lists and dicts with every field the CLI prints."""
    source = tmp_path / "source"
    _copy_photos(clothing_dir, source / "hat", "hat", 1)
    _copy_photos(clothing_dir, source / "shoes", "shoes", 1)
    report = import_dataset(dataset, source, cache_dir=cache, progress=False, contributor="ada")
    data = json.loads(json.dumps(report.to_json()))
    assert isinstance(report, ImportReport) and data["splits"] == ["train"] and data["labels"] == {"hat": 1, "shoes": 1}
    assert set(data) >= {"source", "kind", "image_column", "label_column", "total", "added", "duplicates", "rejected",
                         "rejected_examples", "seconds"}
    assert {row.contributor for row in dataset.rows()} == {"ada"}
