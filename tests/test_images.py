"""classifr.core.images: every way an image can enter, and every way it can be broken or unusual.

The corpus of bad and unusual files is built in pytest's temp folders at test time; the real
photos come from ../shared/datasets beside the repo. Nothing here decodes anything large.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from classifr.core import images
from classifr.core.errors import ConfigError, ImageTooLargeError, InvalidImageError
from classifr.core.images import ImageLimits, LoadedImage, describe_limits, read_image

# --- corpus builders ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_path(clothing_dir: Path) -> Path:
    """One real JPEG from the clothing test set (400 pixels wide, 400 to 711 high)."""
    return sorted((clothing_dir / "test").glob("*/*.jpg"))[0]


def _save(img: Image.Image, path: Path, fmt: str | None = None, **params) -> Path:
    img.save(path, fmt, **params)
    return path


def _encode(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _write_bilevel_png(path: Path, width: int, height: int) -> Path:
    """A 1-bit grey all-black PNG written by hand: rows of zeros streamed through zlib in blocks.

    At 30000x30000 the raw data is ~112 MB but the file is ~110 KB: a decompression bomb.
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    block_rows = 1000
    compressor = zlib.compressobj(9)
    idat = []
    for start in range(0, height, block_rows):
        idat.append(compressor.compress(row * min(block_rows, height - start)))
    idat.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grey, no interlace
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(idat))
        + _png_chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_bilevel_png(tmp_path_factory.mktemp("bomb") / "bomb.png", 30_000, 30_000)


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory, photo_path: Path) -> Path:
    """The real photo upscaled to 4000x3000 (12 MP) and saved as JPEG, like a phone photo."""
    with Image.open(photo_path) as photo:
        big = photo.convert("RGB").resize((4000, 3000), Image.Resampling.BILINEAR)
    return _save(big, tmp_path_factory.mktemp("big") / "big.jpg", "JPEG", quality=85)


def _header(path: Path) -> tuple[str, tuple[int, int], int]:
    """Mode, size and frame count as Pillow sees the file, to show the corpus is what it claims."""
    with Image.open(path) as img:
        return img.mode, img.size, getattr(img, "n_frames", 1)


def _pixel(loaded: LoadedImage, xy: tuple[int, int] = (0, 0)) -> tuple[int, int, int]:
    return loaded.image.getpixel(xy)


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# --- limits and configuration ---------------------------------------------------------------------


def test_limits_reject_non_positive_values() -> None:
    """ImageLimits with 0, a negative, a float or a bool: a ConfigError (a ValueError) naming the field."""
    for field, value in [("max_bytes", 0), ("max_pixels", -1), ("max_side", 2.5), ("max_side", True)]:
        with pytest.raises(ConfigError, match=field) as info:
            ImageLimits(**{field: value})
        assert isinstance(info.value, ValueError)


def test_describe_limits_is_one_readable_line() -> None:
    """The UI line for the default limits names the formats, 50 MB and 120 megapixels."""
    text = describe_limits(ImageLimits())
    assert text.startswith("JPEG, PNG, WebP, GIF, BMP, TIFF")
    assert "up to 50 MB and 120 megapixels" in text
    assert "\n" not in text


def test_min_side_must_be_positive(photo_path: Path) -> None:
    """min_side=0 is a programming error, not a bad image: plain ValueError."""
    with pytest.raises(ValueError, match="min_side"):
        read_image(photo_path, min_side=0)


# --- broken and hostile inputs --------------------------------------------------------------------


def test_zero_byte_file(tmp_path: Path) -> None:
    """An empty file named x.jpg: 'x.jpg is empty (0 bytes)'."""
    path = tmp_path / "x.jpg"
    path.write_bytes(b"")
    with pytest.raises(InvalidImageError, match=r"x\.jpg is empty \(0 bytes\)"):
        read_image(path)


def test_empty_bytes() -> None:
    """b'' with no name: '<bytes> is empty'."""
    with pytest.raises(InvalidImageError, match="<bytes> is empty"):
        read_image(b"")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    """A text file with a .jpg name: 'notes.jpg is not an image Classifr can read'."""
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n" * 10)
    with pytest.raises(InvalidImageError, match=r"notes\.jpg is not an image Classifr can read"):
        read_image(path)


def test_truncated_jpeg(tmp_path: Path, photo_path: Path) -> None:
    """A real photo's bytes cut in half: 'is truncated or corrupt', with Pillow's reason."""
    data = photo_path.read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidImageError, match=r"half\.jpg is truncated or corrupt: \S+"):
        read_image(path)


def test_corrupt_png(tmp_path: Path) -> None:
    """A PNG whose compressed pixel data is overwritten with junk: 'is truncated or corrupt'."""
    rng = np.random.default_rng(0)
    data = bytearray(_encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG"))
    data[100:400] = b"\xff" * 300  # inside the IDAT chunk
    path = tmp_path / "junk.png"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidImageError, match=r"junk\.png is truncated or corrupt"):
        read_image(path)


def test_format_outside_the_accepted_list(tmp_path: Path) -> None:
    """A valid PPM image: Pillow can read it, but uploads only accept the listed formats."""
    path = _save(Image.new("RGB", (8, 8), "red"), tmp_path / "red.ppm")
    with pytest.raises(InvalidImageError, match=r"red\.ppm is not an image Classifr can read \(accepted: JPEG"):
        read_image(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    """A path that does not exist, and a folder: clear messages, not OSError tracebacks."""
    with pytest.raises(InvalidImageError, match=r"^no such file: .*nothing\.jpg$"):
        read_image(tmp_path / "nothing.jpg")
    with pytest.raises(InvalidImageError, match="is a folder, not an image file"):
        read_image(str(tmp_path))


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_png_bomb_is_refused_from_its_header(bomb_png: Path) -> None:
    """A ~110 KB PNG whose header says 30000x30000 (900 MP): ImageTooLargeError naming both sizes.

    Pillow's own cap fires inside Image.open first; the message still gives the header size and
    our limit, so it was decided from the header, not by decoding 112 MB of rows.
    """
    assert bomb_png.stat().st_size < 1024 * 1024
    with pytest.raises(ImageTooLargeError) as info:
        read_image(bomb_png)
    message = str(info.value)
    assert "bomb.png is 30000x30000 = 900,000,000 pixels" in message
    assert "the limit is 120,000,000" in message


def test_png_bomb_over_max_side(bomb_png: Path) -> None:
    """The same bomb with max_side=20000: the side limit is named."""
    with pytest.raises(ImageTooLargeError, match="30000x30000 pixels; the limit is 20,000 pixels a side"):
        read_image(bomb_png, limits=ImageLimits(max_side=20_000))


def test_over_max_side(tmp_path: Path) -> None:
    """A 40x20 PNG with max_side=30: 'wide.png is 40x20 pixels; the limit is 30 pixels a side'."""
    path = _save(Image.new("RGB", (40, 20)), tmp_path / "wide.png")
    with pytest.raises(ImageTooLargeError, match=r"wide\.png is 40x20 pixels; the limit is 30 pixels a side"):
        read_image(path, limits=ImageLimits(max_side=30))


def test_over_max_pixels(tmp_path: Path) -> None:
    """A 40x20 PNG with max_pixels=500: both the pixel count and the limit are named."""
    path = _save(Image.new("RGB", (40, 20)), tmp_path / "many.png")
    with pytest.raises(ImageTooLargeError, match=r"many\.png is 40x20 = 800 pixels; the limit is 500$"):
        read_image(path, limits=ImageLimits(max_pixels=500))


def test_over_max_bytes_for_every_encoded_source(tmp_path: Path) -> None:
    """A ~3 KB noise PNG with max_bytes=1000, as a path, as bytes and as a stream: the limit is named."""
    rng = np.random.default_rng(1)
    data = _encode(Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)), "PNG")
    assert len(data) > 1000
    path = tmp_path / "heavy.png"
    path.write_bytes(data)
    limits = ImageLimits(max_bytes=1000)
    with pytest.raises(ImageTooLargeError, match=rf"heavy\.png is {len(data):,} bytes; the limit is 1,000 bytes"):
        read_image(path, limits=limits)
    with pytest.raises(ImageTooLargeError, match=r"<bytes> is .* bytes; the limit is 1,000 bytes"):
        read_image(data, limits=limits)
    # A stream's size is unknown up front: reading stops one byte past the limit.
    stream = io.BytesIO(data)
    with pytest.raises(ImageTooLargeError, match=r"upload\.png is larger than the limit of 1,000 bytes"):
        read_image(stream, limits=limits, name="upload.png")
    assert stream.tell() == 1001


def test_pillow_warning_cap_does_not_lower_our_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's bomb *warning* threshold set to 1000 px, a 40x40 (1600 px) image, warnings as errors.

    With the defaults Pillow warns at 89.5 MP, below our 120 MP limit; our check must decide, so
    the image is read and no warning escapes.
    """
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = _save(Image.new("RGB", (40, 40), "blue"), tmp_path / "between.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = read_image(path)
    assert loaded.image.size == (40, 40)


def test_pillow_hard_cap_is_reported_as_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's hard cap at 2000 px and a 50x50 image: ImageTooLargeError, with our limit if lower."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = _save(Image.new("RGB", (50, 50), "blue"), tmp_path / "capped.png")
    pillow_cap = r"capped\.png is 50x50 = 2,500 pixels; the image reader refuses more than 2,000"
    with pytest.raises(ImageTooLargeError, match=pillow_cap):
        read_image(path)
    with pytest.raises(ImageTooLargeError, match=r"capped\.png is 50x50 = 2,500 pixels; the limit is 100$"):
        read_image(path, limits=ImageLimits(max_pixels=100))


def test_unsupported_source_types() -> None:
    """An int and a list: InvalidImageError naming the type."""
    with pytest.raises(InvalidImageError, match="from a int"):
        read_image(42)
    with pytest.raises(InvalidImageError, match="from a list"):
        read_image([1, 2, 3])


def test_bad_numpy_arrays() -> None:
    """float32 and int64 arrays name their dtype; an HxWx2 array names its shape; 0x0 has no pixels."""
    with pytest.raises(InvalidImageError, match="<array> has dtype float32; expected uint8"):
        read_image(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(InvalidImageError, match="dtype int64"):
        read_image(np.zeros((4, 4), dtype=np.int64))
    with pytest.raises(InvalidImageError, match=r"shape \(4, 4, 2\)"):
        read_image(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(InvalidImageError, match="has no pixels"):
        read_image(np.zeros((0, 0, 3), dtype=np.uint8))


def test_text_mode_stream(tmp_path: Path) -> None:
    """A file opened with 'r' instead of 'rb': the message says to open it in binary mode."""
    path = tmp_path / "t.png"
    path.write_text("abc")
    with open(path) as stream, pytest.raises(InvalidImageError, match="opened in text mode"):
        read_image(stream)


def _bad_inputs(tmp_path: Path, photo_path: Path, bomb_png: Path) -> list[tuple[Path, ImageLimits]]:
    """(file, limits) pairs that each must fail."""
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    half = tmp_path / "half.jpg"
    half.write_bytes(photo_path.read_bytes()[:5000])
    small = _save(Image.new("RGB", (40, 20)), tmp_path / "small.png")
    return [
        (empty, ImageLimits()),
        (text, ImageLimits()),
        (half, ImageLimits()),
        (bomb_png, ImageLimits()),
        (small, ImageLimits(max_bytes=10)),
        (small, ImageLimits(max_side=10)),
        (small, ImageLimits(max_pixels=10)),
        (tmp_path / "missing.png", ImageLimits()),
    ]


def test_every_error_is_one_line_naming_the_file(tmp_path: Path, photo_path: Path, bomb_png: Path) -> None:
    """Each broken input above, as a path and (when it exists) as bytes named by the caller:
    an InvalidImageError that is also a ValueError, one line, containing the file name."""
    for path, limits in _bad_inputs(tmp_path, photo_path, bomb_png):
        sources = [path] + ([path.read_bytes()] if path.exists() else [])
        for source in sources:
            with pytest.raises(InvalidImageError) as info:
                read_image(source, limits=limits, name=path.name if isinstance(source, bytes) else None)
            message = str(info.value)
            assert isinstance(info.value, ValueError)
            assert "\n" not in message, message
            assert path.name in message, message


def test_name_with_newline_stays_one_line() -> None:
    """A caller-supplied name with a newline in it: the message is still one line."""
    with pytest.raises(InvalidImageError) as info:
        read_image(b"not an image", name="evil\nname.jpg")
    assert "\n" not in str(info.value)
    assert "evil\\nname.jpg" in str(info.value)


# --- unusual but valid images ---------------------------------------------------------------------


def test_16bit_png_mid_grey_stays_mid_grey(tmp_path: Path) -> None:
    """A 16-bit grey PNG of value 32768: about 128, where a plain convert('RGB') would give 255."""
    path = _save(Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)), tmp_path / "grey16.png")
    assert _header(path)[0].startswith("I")
    loaded = read_image(path)
    assert loaded.image.mode == "RGB"
    assert _close(_pixel(loaded), (128, 128, 128), tolerance=1)


def test_32bit_and_float_images_are_scaled() -> None:
    """PIL 'I' images in the 16-bit range and beyond it, and an 'F' image: all land in 0-255."""
    sixteen = read_image(Image.fromarray(np.full((2, 2), 65535, dtype=np.int32)))
    assert _pixel(sixteen) == (255, 255, 255)
    wide = read_image(Image.fromarray(np.array([[-1000, 0], [1000, 3000]], dtype=np.int32)))
    assert _pixel(wide, (0, 0)) == (0, 0, 0) and _pixel(wide, (1, 1)) == (255, 255, 255)
    floats = read_image(Image.fromarray(np.array([[0.0, 0.5], [1.0, np.nan]], dtype=np.float32)))
    assert _pixel(floats, (1, 0)) == (128, 128, 128) and _pixel(floats, (0, 1)) == (255, 255, 255)


def test_cmyk_jpeg_comes_back_red(tmp_path: Path) -> None:
    """A red RGB image saved as a CMYK JPEG: red again, not inverted."""
    path = _save(Image.new("RGB", (16, 16), (255, 0, 0)).convert("CMYK"), tmp_path / "cmyk.jpg", "JPEG")
    assert _header(path)[0] == "CMYK"
    assert _close(_pixel(read_image(path), (8, 8)), (255, 0, 0))


def test_palette_png_transparency_becomes_white(tmp_path: Path) -> None:
    """A P-mode PNG where palette index 0 is transparent: those pixels white, the rest red."""
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((3, 3), 1)
    path = _save(img, tmp_path / "logo.png", transparency=0)
    loaded = read_image(path)
    assert _pixel(loaded, (0, 0)) == (255, 255, 255)  # transparent black -> white
    assert _pixel(loaded, (3, 3)) == (255, 0, 0)


def test_rgba_png_is_composited_on_white(tmp_path: Path) -> None:
    """RGBA pixels: fully transparent black, opaque red, half-transparent black."""
    array = np.zeros((1, 3, 4), dtype=np.uint8)
    array[0, 1] = (255, 0, 0, 255)
    array[0, 2] = (0, 0, 0, 128)
    loaded = read_image(_save(Image.fromarray(array), tmp_path / "rgba.png"))
    assert _pixel(loaded, (0, 0)) == (255, 255, 255)
    assert _pixel(loaded, (1, 0)) == (255, 0, 0)
    assert _close(_pixel(loaded, (2, 0)), (127, 127, 127), tolerance=1)


def test_la_png_is_composited_on_white(tmp_path: Path) -> None:
    """An LA PNG: a transparent pixel becomes white, an opaque dark one stays dark."""
    img = Image.new("LA", (2, 1), (0, 0))
    img.putpixel((1, 0), (30, 255))
    loaded = read_image(_save(img, tmp_path / "la.png"))
    assert _pixel(loaded, (0, 0)) == (255, 255, 255)
    assert _pixel(loaded, (1, 0)) == (30, 30, 30)


def test_one_bit_png(tmp_path: Path) -> None:
    """A mode '1' PNG with a black and a white pixel."""
    img = Image.new("1", (2, 1), 0)
    img.putpixel((1, 0), 1)
    loaded = read_image(_save(img, tmp_path / "bits.png"))
    assert loaded.image.mode == "RGB"
    assert [_pixel(loaded, (0, 0)), _pixel(loaded, (1, 0))] == [(0, 0, 0), (255, 255, 255)]


def test_animated_gif_returns_the_first_frame(tmp_path: Path) -> None:
    """A two-frame GIF, red then blue: the red frame comes back."""
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    path = _save(red, tmp_path / "anim.gif", save_all=True, append_images=[blue], duration=100, loop=0)
    assert _header(path)[2] == 2
    loaded = read_image(path)
    assert loaded.format == "GIF"
    assert _close(_pixel(loaded, (4, 4)), (255, 0, 0))


def test_animated_webp_returns_the_first_frame(tmp_path: Path) -> None:
    """A two-frame lossless WebP, green then blue: green comes back."""
    green, blue = Image.new("RGB", (8, 8), (0, 255, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    path = _save(green, tmp_path / "anim.webp", save_all=True, append_images=[blue], lossless=True)
    assert _close(_pixel(read_image(path), (4, 4)), (0, 255, 0))


def _exif_jpeg(path: Path, size: tuple[int, int], orientation: int) -> Path:
    """Left half red, right half blue, with the given EXIF orientation."""
    img = Image.new("RGB", size, (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(img, path, "JPEG", exif=exif, quality=95)


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    """A 40x20 JPEG with orientation 6 (rotate 90 degrees clockwise): 20x40, red half on top."""
    loaded = read_image(_exif_jpeg(tmp_path / "rotated.jpg", (40, 20), 6))
    assert loaded.image.size == (20, 40)
    assert loaded.original_size == (20, 40)
    assert _close(_pixel(loaded, (10, 5)), (255, 0, 0))
    assert _close(_pixel(loaded, (10, 35)), (0, 0, 255))
    assert loaded.image.getexif().get(0x0112) is None  # nobody downstream can rotate it twice


def test_broken_exif_falls_back_to_no_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """exif_transpose made to raise, as a damaged EXIF block can: the image unrotated, one warning."""
    path = _exif_jpeg(tmp_path / "damaged.jpg", (40, 20), 6)

    def broken(image: Image.Image) -> Image.Image:
        raise SyntaxError("not a TIFF file")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    with caplog.at_level(logging.WARNING, logger="classifr.core.images"):
        loaded = read_image(path)
    assert loaded.image.size == loaded.original_size == (40, 20)
    assert "damaged.jpg: ignoring unreadable EXIF orientation" in caplog.text


def test_garbage_exif_block_is_harmless(tmp_path: Path) -> None:
    """A JPEG whose EXIF segment is 'Exif\\0\\0garbage': decoded as is."""
    path = _save(Image.new("RGB", (40, 20), "red"), tmp_path / "garbage.jpg", "JPEG", exif=b"Exif\x00\x00garbage")
    assert read_image(path).image.size == (40, 20)


def test_one_pixel_png(tmp_path: Path) -> None:
    """A 1x1 PNG, even with min_side asking for far more: read at 1x1."""
    loaded = read_image(_save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "dot.png"), min_side=224)
    assert loaded.image.size == loaded.original_size == (1, 1)
    assert _pixel(loaded) == (1, 2, 3)


def test_real_photo(photo_path: Path) -> None:
    """A real JPEG from the clothing data set: RGB, full size, every field filled in."""
    loaded = read_image(photo_path)
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == loaded.original_size == _header(photo_path)[1]
    assert loaded.format == "JPEG"
    assert loaded.num_bytes == photo_path.stat().st_size
    assert loaded.name == str(photo_path)
    assert not getattr(loaded.image, "tile", None)  # fully decoded, nothing lazy left


# --- JPEG draft mode ------------------------------------------------------------------------------


def test_jpeg_draft_decodes_a_12_megapixel_photo_small(big_jpeg: Path) -> None:
    """The real photo upscaled to 4000x3000, read with min_side=256: decoded at 1/8 (500x375),
    shorter side in [256, 512), original_size still (4000, 3000); min_side=None: full size."""
    loaded = read_image(big_jpeg, min_side=256)
    assert 256 <= min(loaded.image.size) < 512
    assert loaded.image.size == (500, 375)
    assert loaded.original_size == (4000, 3000)
    full = read_image(big_jpeg)
    assert full.image.size == full.original_size == (4000, 3000)


@pytest.mark.parametrize(
    ("size", "min_side", "decoded"),
    [
        ((1000, 600), 75, (125, 75)),  # exactly 1/8 still reaches min_side
        ((1000, 600), 76, (250, 150)),  # one more pixel needed: 1/4
        ((1000, 600), 300, (500, 300)),  # 1/2
        ((1000, 600), 301, (1000, 600)),  # no reduction possible
        ((999, 601), 75, (125, 76)),  # odd sizes round up
    ],
)
def test_jpeg_draft_never_goes_below_min_side(
    tmp_path: Path, size: tuple[int, int], min_side: int, decoded: tuple[int, int]
) -> None:
    """Small JPEGs at the edges of each DCT scale: the decoded shorter side is never below min_side."""
    path = _save(Image.new("RGB", size, (10, 200, 30)), tmp_path / "edge.jpg", "JPEG")
    loaded = read_image(path, min_side=min_side)
    assert loaded.image.size == decoded
    assert min(loaded.image.size) >= min_side or decoded == size


def test_jpeg_draft_with_exif_rotation(tmp_path: Path) -> None:
    """A 2000x1000 JPEG with orientation 6 and min_side=200: decoded at 1/4 then rotated to 250x500;
    original_size is the full size after rotation, (1000, 2000)."""
    loaded = read_image(_exif_jpeg(tmp_path / "tall.jpg", (2000, 1000), 6), min_side=200)
    assert loaded.image.size == (250, 500)
    assert loaded.original_size == (1000, 2000)


def test_draft_is_only_for_jpeg(tmp_path: Path) -> None:
    """A 1000x600 PNG with min_side=75: PNG has no reduced decode, so it comes back full size."""
    loaded = read_image(_save(Image.new("RGB", (1000, 600)), tmp_path / "big.png"), min_side=75)
    assert loaded.image.size == (1000, 600)


# --- every source type ----------------------------------------------------------------------------


def test_every_source_type_gives_the_same_pixels(tmp_path: Path, photo_path: Path) -> None:
    """A 64x48 crop of a real photo as a lossless PNG, passed as str, Path, bytes, bytearray,
    memoryview, binary file, PIL image and HxWx3 uint8 array: identical RGB pixels."""
    with Image.open(photo_path) as photo:
        crop = photo.convert("RGB").crop((100, 200, 164, 248))
    path = _save(crop, tmp_path / "crop.png")
    data = path.read_bytes()
    expected = np.asarray(crop)
    with open(path, "rb") as stream:
        from_stream = read_image(stream)
    with Image.open(path) as opened:
        from_pil = read_image(opened)
    results = {
        "str": read_image(str(path)),
        "Path": read_image(path),
        "bytes": read_image(data),
        "bytearray": read_image(bytearray(data)),
        "memoryview": read_image(memoryview(data)),
        "file": from_stream,
        "PIL": from_pil,
        "array": read_image(expected.copy()),
    }
    for kind, loaded in results.items():
        assert loaded.image.mode == "RGB", kind
        assert loaded.original_size == (64, 48), kind
        np.testing.assert_array_equal(np.asarray(loaded.image), expected, err_msg=kind)
    assert results["file"].name == str(path)
    assert results["bytes"].name == "<bytes>" and results["array"].name == "<array>"
    assert results["array"].format is None and results["array"].num_bytes == 0


def test_grey_sources_give_the_same_pixels(tmp_path: Path) -> None:
    """An HxW uint8 array, an HxWx1 array and the same grey image as a PNG: identical grey RGB."""
    grey = np.arange(12 * 8, dtype=np.uint8).reshape(8, 12)
    expected = np.repeat(grey[:, :, None], 3, axis=2)
    path = _save(Image.fromarray(grey), tmp_path / "grey.png")
    for source in (grey, grey[:, :, None], path):
        np.testing.assert_array_equal(np.asarray(read_image(source).image), expected)


def test_numpy_rgba_is_composited_on_white() -> None:
    """An HxWx4 webcam-style array with a transparent pixel: white."""
    array = np.zeros((2, 2, 4), dtype=np.uint8)
    array[1, 1] = (0, 255, 0, 255)
    loaded = read_image(array)
    assert _pixel(loaded, (0, 0)) == (255, 255, 255)
    assert _pixel(loaded, (1, 1)) == (0, 255, 0)


def test_pil_input_is_not_changed(tmp_path: Path) -> None:
    """A caller's Image.open() of an EXIF-rotated JPEG: the result is rotated, the caller's image is not."""
    path = _exif_jpeg(tmp_path / "mine.jpg", (40, 20), 6)
    with Image.open(path) as mine:
        loaded = read_image(mine)
        assert mine.size == (40, 20) and mine.getexif().get(0x0112) == 6
    assert loaded.image.size == (20, 40)


def test_array_limits_apply_too() -> None:
    """A 40x20 array with max_side=30: the same ImageTooLargeError as a file."""
    with pytest.raises(ImageTooLargeError, match="<array> is 40x20 pixels; the limit is 30 pixels a side"):
        read_image(np.zeros((20, 40, 3), dtype=np.uint8), limits=ImageLimits(max_side=30))


# --- hashing --------------------------------------------------------------------------------------


def test_sha256_is_the_hash_of_the_file_bytes(photo_path: Path) -> None:
    """sha256 of a real photo read by path equals hashlib.sha256 of its bytes, and is cached."""
    loaded = read_image(photo_path)
    assert "sha256" not in vars(loaded)  # not computed on the predict path
    assert loaded.sha256 == hashlib.sha256(photo_path.read_bytes()).hexdigest()
    assert vars(loaded)["sha256"] == loaded.sha256
    assert loaded.data == photo_path.read_bytes()


def test_sha256_of_arrays_covers_pixels_and_shape() -> None:
    """Arrays have no file bytes: equal pixels hash equal; a 2x4 and a 4x2 black array differ."""
    a = read_image(np.zeros((2, 4, 3), dtype=np.uint8))
    b = read_image(np.zeros((2, 4, 3), dtype=np.uint8))
    c = read_image(np.zeros((4, 2, 3), dtype=np.uint8))
    assert a.sha256 == b.sha256 != c.sha256
    assert len(a.sha256) == 64


def test_module_never_touches_pillow_globals(tmp_path: Path, bomb_png: Path, photo_path: Path) -> None:
    """After good and bad reads, Pillow's global bomb cap and truncated-image flag are unchanged."""
    from PIL import ImageFile

    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters))
    read_image(photo_path, min_side=64)
    with pytest.raises(ImageTooLargeError):
        read_image(bomb_png)
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters)) == before
    assert images.logger.name == "classifr.core.images"


def test_the_logs_copy_is_a_small_bare_jpeg_as_received_else_a_thumbnail(sandal_photo, tmp_path):
    """A 400x533 JPEG without metadata is kept byte for byte; the same with a comment (metadata,
    docs/privacy.md), a 12-megapixel JPEG and a PNG become JPEGs of at most 512 px."""
    import io

    from PIL import Image

    from classifr.core.images import read_image, stored_copy

    small = read_image(sandal_photo, min_side=224)
    assert stored_copy(small) == sandal_photo.read_bytes()
    commented = tmp_path / "commented.jpg"
    Image.open(sandal_photo).save(commented, quality=92, comment=b"taken at home")
    big_path = tmp_path / "big.jpg"
    Image.open(sandal_photo).convert("RGB").resize((4000, 3000)).save(big_path, quality=92)
    png_path = tmp_path / "photo.png"
    Image.open(sandal_photo).save(png_path)
    for path in (commented, big_path, png_path):
        copy = Image.open(io.BytesIO(stored_copy(read_image(path, min_side=224))))
        assert copy.format == "JPEG" and max(copy.size) <= 512 and "comment" not in copy.info
