"""The memory budget per request: decoded bytes checked before decoding, explanations bounded and
drawn at the display size (docs/speed.md, "Memory per request"). No timings are asserted."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from classifr.core.errors import ImageTooLargeError
from classifr.core.images import ImageLimits, decoded_bytes, read_image

MB = 1024 * 1024


@pytest.fixture(scope="session")
def bilevel_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10950x10950 pixels in 1 bit: about 14 KB of file, under the 120 MP limit, 572 MB once decoded."""
    path = tmp_path_factory.mktemp("bilevel") / "bilevel.png"
    Image.new("1", (10950, 10950)).save(path, optimize=True)
    return path


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pixel decode fails the test: a refusal must come from the header alone."""

    def load(self, *args, **kwargs):
        raise AssertionError(f"decoded {self.size} pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def test_a_small_bilevel_png_of_572_mb_is_refused_before_decoding(bilevel_png: Path, no_decoding) -> None:
    """A 14 KB file whose 1-byte and RGB buffers would take 572 MB: one line naming size and limit."""
    assert bilevel_png.stat().st_size < 64 * 1024
    with pytest.raises(ImageTooLargeError) as info:
        read_image(bilevel_png, min_side=224)
    assert str(info.value).endswith("/bilevel.png is 10950x10950 pixels: 571.7 MB once decoded; the limit is 100 MB")


def test_the_largest_accepted_bilevel_png_decodes(tmp_path: Path) -> None:
    """A 1-bit PNG whose count is just under the default limit is read; one pixel more a side is not."""
    side = int((100 * MB / 5) ** 0.5)
    assert decoded_bytes("1", (side, side)) <= 100 * MB < decoded_bytes("1", (side + 1, side + 1))
    path = tmp_path / "just-under.png"
    Image.new("1", (side, side), 1).save(path, optimize=True)
    loaded = read_image(path)
    assert loaded.image.size == (side, side) and loaded.image.getpixel((0, 0)) == (255, 255, 255)
    Image.new("1", (side + 1, side + 1)).save(path, optimize=True)
    with pytest.raises(ImageTooLargeError, match="once decoded; the limit is 100 MB"):
        read_image(path)


def test_decoded_bytes_counts_pillows_buffers() -> None:
    """1-bit + RGB; RGB alone (4 bytes a pixel in Pillow); an EXIF rotation doubles the source."""
    assert decoded_bytes("1", (100, 10)) == 1000 * (1 + 4)
    assert decoded_bytes("RGB", (100, 10)) == 1000 * 4
    assert decoded_bytes("RGB", (100, 10), transposed=True) == 1000 * 8
    assert decoded_bytes("RGBA", (100, 10)) == 1000 * (4 + 4)
    assert decoded_bytes("P", (100, 10), transparency=True) == 1000 * (1 + 8)


def test_jpeg_draft_keeps_a_large_jpeg_accepted_for_prediction(tmp_path: Path) -> None:
    """A 2000x1500 JPEG (11.4 MB decoded) under a 4 MB budget: read at 1/4 with min_side, refused in full."""
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (2000, 1500), (40, 120, 200)).save(path, quality=90)
    limits = ImageLimits(max_decoded_bytes=4 * MB)
    loaded = read_image(path, limits=limits, min_side=256)
    assert loaded.image.size == (500, 375) and loaded.original_size == (2000, 1500)
    with pytest.raises(ImageTooLargeError, match=r"phone\.jpg is 2000x1500 pixels: 11\.4 MB once decoded; the limit is 4 MB$"):
        read_image(path, limits=limits)


def test_the_default_budget_reads_a_48_megapixel_jpeg_reduced_only(tmp_path: Path) -> None:
    """8000x6000 decodes at 1/8 for a 256 px model (1.8 MB); in full (183 MB) it is refused."""
    path = tmp_path / "48mp.jpg"
    Image.new("RGB", (8000, 6000), (200, 30, 30)).save(path, quality=85)
    assert read_image(path, min_side=256).image.size == (1000, 750)
    with pytest.raises(ImageTooLargeError, match=r"8000x6000 pixels: 183\.1 MB once decoded"):
        read_image(path)


def test_a_rotated_jpeg_counts_its_rotated_copy(tmp_path: Path) -> None:
    """EXIF orientation 6 holds the decode and its rotated copy at once: twice the bytes of the same
    JPEG without it, so a budget of exactly one copy takes the plain one and refuses the rotated one."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (400, 300)).save(tmp_path / "turned.jpg", exif=exif)
    Image.new("RGB", (400, 300)).save(tmp_path / "plain.jpg")
    budget = ImageLimits(max_decoded_bytes=decoded_bytes("RGB", (400, 300)))
    assert read_image(tmp_path / "plain.jpg", limits=budget).image.size == (400, 300)
    with pytest.raises(ImageTooLargeError) as info:
        read_image(tmp_path / "turned.jpg", limits=budget)
    assert str(info.value).endswith("turned.jpg is 400x300 pixels: 960,000 bytes once decoded; the limit is 480,000 bytes")


def test_arrays_and_pil_images_have_the_same_budget() -> None:
    limits = ImageLimits(max_decoded_bytes=1000)
    with pytest.raises(ImageTooLargeError, match="<array> is 20x20 pixels"):
        read_image(np.zeros((20, 20, 3), dtype=np.uint8), limits=limits)
    with pytest.raises(ImageTooLargeError, match="<image> is 20x20 pixels"):
        read_image(Image.new("RGBA", (20, 20)), limits=limits)


# --- explanations ----------------------------------------------------------------------------------


@pytest.fixture
def tiny_service(tmp_path: Path, tiny_vit_dir: Path):
    from classifr.app.project import open_service
    from classifr.core.config import Settings

    settings = Settings.from_env({
        "CLASSIFR_HOME": str(tmp_path / "home"), "CLASSIFR_MODEL": str(tiny_vit_dir),
        "CLASSIFR_PREDICTION_LOG": "0", "CLASSIFR_MAX_CONCURRENT_EXPLANATIONS": "2",
    })
    service = open_service(settings)
    yield service
    service.close()


class _GatedExplainer:
    """Stands in for the Captum explainer: counts calls inside it and holds each until released."""

    def __init__(self, real) -> None:
        self.real = real
        self.inside = 0
        self.most_inside = 0
        self.changed = threading.Condition()
        self.release = threading.Event()

    def explain(self, image, **kwargs):
        with self.changed:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.changed.notify_all()
        assert self.release.wait(30)
        try:
            return self.real.explain(image, **kwargs)
        finally:
            with self.changed:
                self.inside -= 1

    def input_box(self, image):
        return self.real.input_box(image)


def test_explanations_beyond_the_limit_wait_their_turn(tiny_service, monkeypatch, tmp_path: Path) -> None:
    """6 threads explain at once with CLASSIFR_MAX_CONCURRENT_EXPLANATIONS=2: 2 get in, the rest
    wait (none fails), and all 6 finish once released."""
    real = tiny_service._explainer(tiny_service.classifier)
    gated = _GatedExplainer(real)
    monkeypatch.setattr(tiny_service, "_explainer", lambda classifier: gated)
    photo = tmp_path / "p.png"
    Image.new("RGB", (64, 48), (90, 40, 10)).save(photo)
    results, errors = [], []

    def call() -> None:
        try:
            results.append(tiny_service.explain(photo, method="gradcam", max_side=64))
        except Exception as err:  # a waiting request must not fail
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    with gated.changed:
        assert gated.changed.wait_for(lambda: gated.inside == 2, timeout=30)
        # Only a broken bound lets a third in; a correct one passes however slow the machine is.
        assert not gated.changed.wait_for(lambda: gated.inside > 2, timeout=0.5)
    gated.release.set()
    for thread in threads:
        thread.join(30)
    assert errors == [] and len(results) == 6
    assert gated.most_inside == 2


def test_the_overlay_is_drawn_at_the_display_size(tiny_service, monkeypatch, tmp_path: Path) -> None:
    """A 3000x2000 PNG explained for a 300 px display: the photo handed to render is at most 300 px,
    and so is the picture; the explainer sees a copy reduced for the model, not the full photo."""
    from classifr.inference import overlay

    drawn, seen = [], []
    real_render = overlay.render
    monkeypatch.setattr(overlay, "render", lambda photo, *a, **k: drawn.append(photo.size) or real_render(photo, *a, **k))
    real = tiny_service._explainer(tiny_service.classifier)
    monkeypatch.setattr(real, "explain", _recording(real.explain, seen))
    photo = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000), (10, 200, 90)).save(photo)
    for view in ("overlay", "side-by-side"):
        result = tiny_service.explain(photo, method="gradcam", view=view, max_side=300)
        assert max(result.picture.size) <= 300
    assert drawn == [(300, 200), (300, 200)]
    assert all(min(size) < 2 * tiny_service.classifier.min_side for size in seen), seen


def _recording(explain, sizes: list):
    def wrapper(image, **kwargs):
        sizes.append(image.size)
        return explain(image, **kwargs)

    return wrapper


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_large_buffers_are_returned_to_the_system_on_glibc() -> None:
    """The fixed mmap threshold is accepted by this glibc (the service sets it when it starts)."""
    from classifr.core.memory import return_large_buffers_to_the_system

    assert return_large_buffers_to_the_system() is True
