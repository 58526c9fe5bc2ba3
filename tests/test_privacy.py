"""Privacy by default (docs/privacy.md): no stored copy of a photo keeps its metadata, thumbnails of
photos nobody contributed expire, and only maintainers see photos from the prediction log.

The photos are real clothing-small JPEGs given a camera's worth of metadata: EXIF with a GPS
position, a camera make and Orientation=6 (turn 90 degrees), an XMP packet, a JPEG comment and an
ICC profile; a PNG gets tEXt, iTXt (XMP), eXIf and iCCP chunks.
"""

from __future__ import annotations

import io
import sqlite3
import struct
import time
import uuid

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from classifr.app.access import NotAMaintainerError
from classifr.app.grants import GrantIssuer, MaintainerGrant
from classifr.app.project import open_service
from classifr.core.config import Settings
from classifr.core.images import ImageLimits, metadata_free_encoding, read_image, stored_copy
from classifr.data.dataset import Example, ProjectDataset
from classifr.monitoring.log import LoggedPrediction, PredictionLog
from tests.fake_hub import FakeHfApi
from tests.conftest import MAINTAINER_PASSWORD

GPS = {1: "N", 2: (52.0, 22.0, 1.0), 3: "E", 4: (4.0, 53.0, 2.0)}  # GPSInfo IFD: Amsterdam
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="52,22.0N"/></rdf:RDF></x:xmpmeta>'
)
# Byte strings that only the metadata blocks hold: none may appear in a stored file.
TELLTALES = (b"Exif\x00\x00", b"ns.adobe.com", b"GPSLatitude", b"secret-comment", b"SecretCam", b"ICC_PROFILE", b"desc")
PASSWORD = MAINTAINER_PASSWORD


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; the upright picture is 90 degrees clockwise
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = GPS  # GPSInfo
    return exif


def _icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture(scope="module")
def plain_photo(clothing_dir):
    return sorted((clothing_dir / "test" / "hat").glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def gps_jpeg(plain_photo) -> bytes:
    """The real photo with every metadata block a phone or an editor writes, quantization kept."""
    with Image.open(plain_photo) as source:
        out = io.BytesIO()
        source.save(out, "JPEG", exif=_exif(), icc_profile=_icc(), comment=b"secret-comment", xmp=XMP,
                    qtables=source.quantization, subsampling=2)
    data = out.getvalue()
    with Image.open(io.BytesIO(data)) as check:  # the fixture really carries what the tests look for
        assert check.getexif().get_ifd(0x8825) == GPS and {"xmp", "comment", "icc_profile"} <= set(check.info)
    return data


@pytest.fixture(scope="module")
def gps_png(plain_photo) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret-comment")
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    out = io.BytesIO()
    with Image.open(plain_photo) as source:
        source.save(out, "PNG", pnginfo=info, exif=_exif(), icc_profile=_icc())
    return out.getvalue()


def _upright_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return ImageOps.exif_transpose(img).size


def _png_chunks(data: bytes) -> list[bytes]:
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        chunks.append(kind)
        offset += 12 + length
    return chunks


def assert_no_metadata(data: bytes) -> None:
    """Neither Pillow nor a byte search finds any metadata block in a stored file."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert not img.getexif(), f"EXIF left: {dict(img.getexif())}"
        assert not {"exif", "xmp", "comment", "icc_profile", "Comment", "XML:com.adobe.xmp"} & set(img.info), img.info
        if img.format == "PNG":
            assert set(_png_chunks(data)) <= {b"IHDR", b"IDAT", b"IEND"}, _png_chunks(data)
    found = [t for t in TELLTALES if t in data]
    assert not found, f"metadata bytes left in the stored file: {found}"


# --- encoding -------------------------------------------------------------------------------------


def test_a_jpeg_is_stored_upright_without_metadata_at_the_sources_quality(gps_jpeg, plain_photo):
    loaded = read_image(gps_jpeg, min_side=32)  # the dataset decodes reduced: storing must not be
    data, image_format = metadata_free_encoding(loaded)
    assert image_format == "JPEG"
    assert_no_metadata(data)
    width, height = Image.open(plain_photo).size
    assert Image.open(io.BytesIO(data)).size == (height, width) == _upright_size(gps_jpeg)  # turned, full size
    # The source's own tables: about the same size, and the same pixels give the same picture.
    assert abs(len(data) - plain_photo.stat().st_size) < 0.1 * plain_photo.stat().st_size
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(gps_jpeg))).convert("RGB"), dtype=np.int16)
    assert np.abs(stored - upright).mean() < 2.0
    assert metadata_free_encoding(read_image(gps_jpeg))[0] == data  # deterministic, however it was decoded


def test_a_png_is_stored_as_a_png_without_text_exif_or_icc_chunks(gps_png):
    assert {b"tEXt", b"iTXt", b"eXIf", b"iCCP"} <= set(_png_chunks(gps_png))
    data, image_format = metadata_free_encoding(read_image(gps_png))
    assert image_format == "PNG"
    assert_no_metadata(data)
    assert Image.open(io.BytesIO(data)).size == _upright_size(gps_png)  # eXIf orientation applied too


def test_the_log_thumbnail_of_a_small_jpeg_is_re_encoded_without_metadata(gps_jpeg):
    data = stored_copy(read_image(gps_jpeg, min_side=224))
    assert_no_metadata(data)
    width, height = Image.open(io.BytesIO(data)).size
    assert height < width  # upright: the source is portrait before its Orientation=6


def test_encoding_leaves_the_callers_image_and_its_metadata_alone(gps_jpeg):
    mine = Image.open(io.BytesIO(gps_jpeg))
    mine.load()
    before = dict(mine.info)
    data, _ = metadata_free_encoding(read_image(mine))
    assert mine.info == before and "exif" in mine.info  # the caller's object is not stripped in place
    assert_no_metadata(data)
    assert_no_metadata(stored_copy(read_image(mine)))


# --- where photos are stored ----------------------------------------------------------------------


def test_the_dataset_stores_the_photo_upright_without_metadata_and_still_dedups(tmp_path, gps_jpeg, gps_png):
    dataset = ProjectDataset(tmp_path / "dataset")
    first = dataset.add(Example(gps_jpeg, "hat", name="phone.jpg"), source="upload")
    again = dataset.add(Example(io.BytesIO(gps_jpeg), "Hat", name="again.jpg"), source="upload")
    png = dataset.add(Example(gps_png, "hat", name="phone.png"), source="upload")
    assert (first.status, again.status, png.status) == ("added", "duplicate", "added")
    for row in dataset.rows():
        data = (dataset.root / row.file_name).read_bytes()
        assert_no_metadata(data)
        assert Image.open(io.BytesIO(data)).size == _upright_size(gps_jpeg)
        assert __import__("hashlib").sha256(data).hexdigest() == row.sha256  # named by what is stored
    assert [row.file_name[-4:] for row in dataset.rows()] == [".jpg", ".png"]


def test_a_photo_too_large_to_decode_in_full_is_stored_reduced_within_the_budget(tmp_path):
    """A large camera JPEG (a 48 MP phone photo under the default budget) must be re-encoded to lose
    its metadata; decoding it in full would break the memory budget, so it is stored at the
    largest JPEG scale that fits, rather than refused or allowed past the budget."""
    big = Image.linear_gradient("L").resize((2000, 1500)).convert("RGB")
    out = io.BytesIO()
    big.save(out, format="JPEG", exif=_exif().tobytes())
    budget = 6 * 1024 * 1024  # full size (2000x1500, turned) needs 24 MB; 1/2 needs 6 MB
    dataset = ProjectDataset(tmp_path / "dataset", limits=ImageLimits(max_decoded_bytes=budget))
    result = dataset.add(Example(out.getvalue(), "gradient", name="big.jpg"), source="upload")
    assert result.status == "added", result.reason
    stored = (dataset.root / dataset.rows()[0].file_name).read_bytes()
    assert_no_metadata(stored)
    assert Image.open(io.BytesIO(stored)).size == (750, 1000)  # half size, turned upright


@pytest.fixture
def service(maintained_service):
    return maintained_service


def test_feedback_and_the_prediction_log_keep_no_metadata(service, gps_jpeg):
    result = service.predict(gps_jpeg, name="phone.jpg")
    assert service.flush_prediction_log()
    thumbnail = service.prediction_log.image(result.id)  # the log's own reader
    assert_no_metadata(thumbnail)
    width, height = Image.open(io.BytesIO(thumbnail)).size
    assert height < width  # upright
    stored = service.record_feedback(gps_jpeg, "dog", prediction=result.to_json(), name="phone.jpg")
    assert stored.status == "added"
    [row] = service.dataset.rows()
    assert_no_metadata((service.dataset.root / row.file_name).read_bytes())


def test_what_the_hub_sync_uploads_has_no_metadata(tmp_path, tiny_default_version, gps_jpeg, gps_png):
    hub = FakeHfApi()
    settings = Settings(home=tmp_path / "home", num_threads=1, backend="torch", dataset_repo="team/data", hf_token="hf_x")
    service = open_service(settings, hf_api=hub, default_version=tiny_default_version)
    try:
        assert service.record_feedback(gps_jpeg, "cat", name="phone.jpg").ok
        assert [r.status for r in service.add_examples([gps_png], "bird", names=["phone.png"])] == ["added"]
    finally:
        service.close()  # the final push
        hub.close()
    files = hub.files_at("team/data", "main", repo_type="dataset")
    images = {name: data for name, data in files.items() if name.startswith("images/")}
    assert len(images) == 2
    for data in images.values():
        assert_no_metadata(data)


# --- retention ------------------------------------------------------------------------------------


def _record(age_days: float) -> LoggedPrediction:
    return LoggedPrediction(
        id=uuid.uuid4().hex, time=time.time() - age_days * 86400, version="v1", variant="production", source="ui",
        labels=("hat",), scores=(0.4,), latency_ms=5.0, image_sha256=uuid.uuid4().hex * 2, width=8, height=8,
        nbytes=100, thumbnail=b"\xff\xd8 a jpeg",
    )


def test_thumbnails_without_feedback_expire_after_the_retention_and_contributed_ones_stay(tmp_path):
    path = tmp_path / "predictions.sqlite"
    old, old_confirmed, old_corrected, recent = _record(31), _record(40), _record(35), _record(29)
    with PredictionLog(path, thumbnail_retention_days=30) as log:
        for record in (old, old_confirmed, old_corrected, recent):
            log.log(record)
        log.record_feedback(label="hat", kind="confirmed", prediction_id=old_confirmed.id)
        log.record_feedback(label="cap", kind="corrected", prediction_id=old_corrected.id)
        assert log.flush()
        kept = {r.id for r in (old, old_confirmed, old_corrected, recent) if log.image(r.id) is not None}
        assert kept == {old_confirmed.id, old_corrected.id, recent.id}
    with sqlite3.connect(path) as conn:  # only the thumbnails go: the predictions stay for the numbers
        assert conn.execute("SELECT count(*) FROM predictions").fetchone()[0] == 4


def test_a_log_written_without_retention_is_cleaned_by_the_first_writer_with_it(tmp_path):
    path = tmp_path / "predictions.sqlite"
    old, older, recent = _record(31), _record(400), _record(1)
    with PredictionLog(path) as log:  # an older build: thumbnails went only by count
        for record in (old, older, recent):
            log.log(record)
    with PredictionLog(path, thumbnail_retention_days=30) as log:
        log.log(_record(0))  # retention runs in a log that writes
        assert log.flush()
        assert [log.image(r.id) is not None for r in (old, older, recent)] == [False, False, True]


def test_the_retention_setting_reaches_the_log(tmp_path):
    settings = Settings.from_env({"CLASSIFR_HOME": str(tmp_path), "CLASSIFR_THUMBNAIL_RETENTION_DAYS": "7"})
    assert settings.thumbnail_retention_days == 7
    assert Settings.from_env({"CLASSIFR_HOME": str(tmp_path)}).thumbnail_retention_days == 30
    from classifr.app.project import open_prediction_log
    from classifr.core.errors import ConfigError

    log = open_prediction_log(settings)
    try:
        assert log.thumbnail_retention_days == 7
    finally:
        log.close()
    with pytest.raises(ConfigError, match="CLASSIFR_THUMBNAIL_RETENTION_DAYS"):
        Settings.from_env({"CLASSIFR_HOME": str(tmp_path), "CLASSIFR_THUMBNAIL_RETENTION_DAYS": "0"})


# --- who sees photos ------------------------------------------------------------------------------


def test_logged_photos_are_refused_without_a_maintainer_grant_and_shown_with_one(service, clothing_dir):
    photos = sorted((clothing_dir / "test" / "hat").glob("*.jpg"))[:3]
    results = service.predict_batch(photos)
    service.record_feedback(photos[0], "bird", prediction=results[0].to_json())
    assert service.flush_prediction_log()
    forged = MaintainerGrant(how="password", issued_at=time.time(), signature="0" * 64)
    other_service = GrantIssuer().issue("password")  # a real grant, but not this service's
    for refused in (None, "password", forged, other_service):
        with pytest.raises(NotAMaintainerError, match="maintainers only"):
            service.review_queue(grant=refused)
        with pytest.raises(NotAMaintainerError, match="maintainers only"):
            service.gallery("corrected", grant=refused)
        with pytest.raises(NotAMaintainerError, match="maintainers only"):
            service.logged_image(results[1].id, grant=refused)
    with pytest.raises(NotAMaintainerError, match="Wrong maintainer password"):
        service.maintainer_grant("guess", client="203.0.113.9")
    grant = service.maintainer_grant(PASSWORD, client="203.0.113.9")
    assert [row["id"] for row in service.gallery("corrected", grant=grant)] == [results[0].id]
    assert {row["id"] for row in service.review_queue(grant=grant)} <= {r.id for r in results[1:]}
    assert service.logged_image(results[1].id, grant=grant)[:2] == b"\xff\xd8"


def test_a_grant_expires():
    clock = [1000.0]
    issuer = GrantIssuer(lifetime_s=60, clock=lambda: clock[0])
    grant = issuer.issue("password")
    assert issuer.check(grant) is grant
    clock[0] += 61
    with pytest.raises(NotAMaintainerError, match="expired"):
        issuer.check(grant)


def test_the_privacy_notes_say_what_is_kept_for_how_long_and_who_sees_it(tmp_path):
    from classifr.ui.privacy import classify_note, contribution_note, monitor_note

    settings = Settings(home=tmp_path, thumbnail_retention_days=14, dataset_repo="team/data", dataset_license="cc0-1.0")
    assert "14 days" in classify_note(settings) and "never shown to other visitors" in classify_note(settings)
    assert "not kept" in classify_note(Settings(home=tmp_path, store_images=False))
    note = contribution_note(settings)
    assert "`team/data`" in note and "cc0-1.0" in note and "location" in note
    assert monitor_note(settings).startswith("Photos are shown to maintainers only.") and "14 days" in monitor_note(settings)


@pytest.mark.slow  # the real app on the real default model
def test_an_anonymous_monitor_refresh_of_the_running_app_returns_no_photos(running_app, gps_jpeg, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(running_app["url"], verbose=False)
    photo = tmp_path / "phone.jpg"
    photo.write_bytes(gps_jpeg)
    _, payload, _ = client.predict(handle_file(str(photo)), api_name="/predict")
    client.predict(handle_file(str(photo)), "clog", "", payload, api_name="/correct")  # a corrected photo exists
    for password in ("", "a guess"):
        outputs = client.predict("24h", "all versions", password, api_name="/monitor")
        galleries = [o for o in outputs if isinstance(o, list) and o and isinstance(o[0], dict) and "image" in o[0]]
        assert galleries == [], "an anonymous visitor was sent photos"
        notes = [o for o in outputs if isinstance(o, str) and "Photos are shown to maintainers only" in o]
        assert notes, outputs


@pytest.mark.slow  # launches a Gradio server
def test_the_monitor_shows_photos_to_a_maintainer_only(service, clothing_dir):
    from gradio_client import Client

    from classifr.ui.app import build_app

    photos = sorted((clothing_dir / "test" / "hat").glob("*.jpg"))[:2]
    results = service.predict_batch(photos)
    service.record_feedback(photos[0], "bird", prediction=results[0].to_json())
    assert service.flush_prediction_log()
    demo = build_app(service)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port())
    try:
        client = Client(demo.local_url, verbose=False)

        def photos_sent(password: str) -> list:
            outputs = client.predict("24h", "all versions", password, api_name="/monitor")
            return [o for o in outputs if isinstance(o, list) and o and isinstance(o[0], dict) and "image" in o[0]]

        assert photos_sent("") == [] and photos_sent("guess") == []
        corrected, review = photos_sent(PASSWORD)
        assert len(corrected) == 1 and "→ bird" in corrected[0]["caption"] and len(review) >= 1
    finally:
        demo.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_jpeg_with_nothing_to_remove_is_stored_as_it_is_and_storing_a_stored_file_changes_nothing(plain_photo, gps_jpeg):
    from classifr.core.images import is_bare_jpeg

    original = plain_photo.read_bytes()
    assert is_bare_jpeg(original) and not is_bare_jpeg(gps_jpeg)
    assert metadata_free_encoding(read_image(original)) == (original, "JPEG")  # no generation loss
    stripped, _ = metadata_free_encoding(read_image(gps_jpeg))
    assert is_bare_jpeg(stripped) and metadata_free_encoding(read_image(stripped))[0] == stripped
    for extra in (original + b"trailing data", original[:2] + b"\xff\xfe\x00\x06hello" + original[2:]):  # after EOI; a COM
        assert not is_bare_jpeg(extra)
