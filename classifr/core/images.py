"""Image input: the one place where every image enters Classifr.

Whatever a caller has (a path, raw bytes, an upload stream, a PIL image, a webcam array) goes
through `read_image`, which

* enforces the size limits on the encoded size and on the header's width and height, before any
  pixel is decoded, so a small file that claims 30000x30000 pixels costs nothing;
* turns every way an input can be broken into one readable `InvalidImageError`;
* decodes JPEGs at a reduced DCT scale when the model needs fewer pixels (the main speed win);
* returns a fully decoded RGB image with EXIF orientation applied and transparency on white.

Limits are per call, never Pillow's global state (`Image.MAX_IMAGE_PIXELS`,
`ImageFile.LOAD_TRUNCATED_IMAGES`), so the app, the CLI and training can each use their own.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import stat
import struct
import warnings
import zlib
from dataclasses import dataclass, fields, replace
from typing import IO, Any

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, JpegImagePlugin, UnidentifiedImageError, features

from classifr.core.errors import ConfigError, ImageTooLargeError, InvalidImageError

logger = logging.getLogger(__name__)

_MB = 1024 * 1024

# The formats Image.open may try. Pillow reads dozens more, but some run external programs (EPS
# runs Ghostscript) and rarely used parsers are where decoder bugs hide, so uploads opt in to the
# common ones. Camera JPEGs that Pillow reports as MPO (a JPEG plus an embedded preview) open
# through the JPEG entry, which hands them to the MPO plugin.
_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
if features.check("avif"):  # Pillow wheels have AVIF since 11.3; a source build may lack libavif
    _FORMATS += ("AVIF",)
_FORMAT_NAMES = ", ".join({"WEBP": "WebP"}.get(f, f) for f in _FORMATS)

# What a damaged file makes Pillow raise while parsing or decoding (UnidentifiedImageError is an
# OSError, so it is caught before these).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that turn width into height


@dataclass(frozen=True)
class ImageLimits:
    """Per-call limits; width and height come from the header and are checked before decoding."""

    max_bytes: int = 50 * _MB  # encoded size
    max_pixels: int = 120_000_000  # width * height
    max_side: int = 30_000  # either side
    # Memory the decode holds at once (`decoded_bytes`), after any reduced JPEG decode: a 14 KB
    # 1-bit PNG under max_pixels can still need 570 MB (docs/speed.md, "Memory per request").
    max_decoded_bytes: int = 100 * _MB

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            # bool is an int subclass; ImageLimits(max_side=True) is a bug, not a limit of 1.
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ImageLimits.{field.name} must be a positive integer, got {value!r}")


# eq=False: comparing two results pixel by pixel is never what a caller means, and the default
# eq would also make instances unhashable (PIL images are).
@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded input, ready for the model layer, plus what a caller may want to know about it."""

    image: Image.Image  # RGB, EXIF orientation applied, possibly reduced by JPEG draft mode
    original_size: tuple[int, int]  # (width, height) of the full-resolution image after EXIF transpose
    format: str | None  # "JPEG", "PNG", ...; None for arrays and PIL images made in memory
    num_bytes: int  # encoded size; 0 for arrays and PIL images
    data: bytes | None  # the encoded bytes, kept so the hash can be computed later
    name: str  # the file name, or "<bytes>", "<file>", "<image>", "<array>"; used in messages

    # A cached_property stores its value in the instance __dict__ directly, bypassing the frozen
    # __setattr__, so it works here: computed on first access, never on the predict path.
    @functools.cached_property
    def sha256(self) -> str:
        """Hex SHA-256 of the encoded bytes exactly as received.

        Arrays and PIL images have no encoded form; their hash covers the size and the RGB pixels
        (the size too, so a 100x200 and a 200x100 black image do not collide).
        """
        if self.data is not None:
            return hashlib.sha256(self.data).hexdigest()
        width, height = self.image.size
        digest = hashlib.sha256(f"RGB {width}x{height}\n".encode())
        digest.update(self.image.tobytes())
        return digest.hexdigest()


THUMBNAIL_SIDE = 512  # large enough to review, explain and train a 224-300 px model on again
KEEP_AS_IS_BYTES = 256 * 1024
# What a stored copy is encoded as, by the input's format (docs/privacy.md): JPEG stays JPEG, every
# other format becomes lossless PNG.
_STORED_AS_JPEG = frozenset({"JPEG", "MPO"})
# JPEG markers that code the picture itself (frames, Huffman/arithmetic and quantization tables,
# restart interval, scans, line count); every other one (APP1-APP15, COM, ...) carries metadata.
_PICTURE_MARKERS = frozenset({*range(0xC0, 0xD0), 0xDA, 0xDB, 0xDC, 0xDD})
_BARE_JFIF_LENGTH = 16  # APP0 length field: itself, "JFIF\0", version, units, densities, 0x0 thumbnail


def jpeg_thumbnail(image: Image.Image, *, max_side: int = THUMBNAIL_SIDE, quality: int = 85) -> bytes:
    """A JPEG copy of a decoded image, its longer side at most `max_side`, without any metadata
    (the prediction log keeps these)."""
    copy = _bare(image, "RGB")
    # reducing_gap: a box reduction first, then bilinear; half the time of a plain bicubic resize.
    copy.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    out = io.BytesIO()
    copy.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def stored_copy(loaded: LoadedImage) -> bytes:
    """What the prediction log keeps of an input: a small JPEG that holds nothing but the picture
    as received (re-encoding costs milliseconds and quality), anything else as a thumbnail of the
    decoded, upright pixels. Never bytes with metadata in them (docs/privacy.md)."""
    small = loaded.data is not None and len(loaded.data) <= KEEP_AS_IS_BYTES
    if small and loaded.format == "JPEG" and max(loaded.original_size) <= 2 * THUMBNAIL_SIDE and is_bare_jpeg(loaded.data):
        return loaded.data
    return jpeg_thumbnail(loaded.image)


def metadata_free_encoding(loaded: LoadedImage, limits: ImageLimits = ImageLimits()) -> tuple[bytes, str]:
    """(bytes, "JPEG" or "PNG"): the image to store, encoded from its decoded, upright pixels at
    full resolution (or, for a JPEG too large for `limits.max_decoded_bytes`, at the largest
    reduced scale that fits), with no metadata at all (no EXIF, XMP, IPTC, ICC profile, comment or text chunk).

    A JPEG (or MPO) input stays a JPEG, encoded with the source's own quantization tables and
    chroma subsampling, so quality and size stay close to the original; every other input becomes
    a PNG. A JPEG with nothing to remove (`is_bare_jpeg`) is kept as it is: re-encoding would only
    lose quality, and storing a stored file again gives the same file. The encoders are
    deterministic: the same input always gives the same bytes.
    """
    if loaded.format == "JPEG" and loaded.data is not None and is_bare_jpeg(loaded.data):
        return loaded.data, "JPEG"
    image = _full_resolution(loaded, limits)
    if loaded.format in _STORED_AS_JPEG and loaded.data is not None:
        return _jpeg_like_source(image, loaded.data), "JPEG"
    out = io.BytesIO()
    _bare(image, "RGB").save(out, format="PNG")
    return out.getvalue(), "PNG"


def is_bare_jpeg(data: bytes) -> bool:
    """Whether a JPEG holds nothing but its picture: the segments that code the pixels and at most a
    JFIF header without a thumbnail, with nothing after its end. So no EXIF (and no orientation to
    apply), XMP, ICC profile, comment, embedded preview or trailing data. Anything unexpected,
    malformed included, answers False (and the caller re-encodes)."""
    if not data.startswith(b"\xff\xd8"):
        return False
    pos, end = 2, len(data)
    while pos + 2 <= end:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # end of image: nothing may follow
            return pos + 2 == end
        if pos + 4 > end:
            return False
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > end or not _is_picture_segment(marker, data[pos + 4 : pos + 2 + length]):
            return False
        pos += 2 + length
        if marker == 0xDA:  # a scan: its entropy-coded data runs to the next marker
            pos = _after_entropy_coded_data(data, pos)
    return False


def _is_picture_segment(marker: int, payload: bytes) -> bool:
    if marker == 0xE0:  # APP0: only a plain JFIF header (a JFXX or JFIF thumbnail is a second picture)
        return len(payload) + 2 == _BARE_JFIF_LENGTH and payload.startswith(b"JFIF\x00") and payload[12:14] == b"\x00\x00"
    return marker in _PICTURE_MARKERS


def _after_entropy_coded_data(data: bytes, pos: int) -> int:
    """The position of the marker that ends a scan's data (0xFF00 is a stuffed byte, 0xFFD0-D7 restarts)."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            pos += 2
        elif following == 0xFF:
            pos += 1
        else:
            return pos


def _full_resolution(loaded: LoadedImage, limits: ImageLimits) -> Image.Image:
    """The decoded pixels at the largest size the decoded-bytes budget allows: the original size
    when it fits, else a JPEG decoded again at 1/2, 1/4 or 1/8 (docs/privacy.md, "What is removed").

    The bytes passed the caller's other limits once already, so only the budget can refuse them.
    """
    if loaded.image.size == loaded.original_size or loaded.data is None:
        return loaded.image
    width, height = loaded.original_size
    own = replace(limits, max_bytes=len(loaded.data), max_pixels=width * height, max_side=max(width, height))
    fits = (s for s in (1, 2, 4) if decoded_bytes("RGB", (-(-width // s), -(-height // s)), transposed=True) <= limits.max_decoded_bytes)
    scale = next(fits, 8)  # draft() goes no further than 1/8
    min_side = None if scale == 1 else max(1, min(width, height) // scale)
    return read_image(loaded.data, limits=own, min_side=min_side, name=loaded.name).image


def _jpeg_like_source(image: Image.Image, source: bytes) -> bytes:
    """`image` as a JPEG with the quantization tables and subsampling of the JPEG `source`.

    Opening `source` again reads its headers only. A greyscale source stays greyscale (its one
    table would otherwise be paired with libjpeg's default chroma table).
    """
    header = Image.open(io.BytesIO(source), formats=("JPEG", "MPO"))
    tables = [header.quantization[key] for key in sorted(header.quantization)][:2]
    mode = "L" if header.mode == "L" else "RGB"
    if mode == "RGB" and len(tables) == 1:
        tables.append(tables[0])
    out = io.BytesIO()
    _bare(image, mode).save(out, format="JPEG", qtables=tables, subsampling=JpegImagePlugin.get_sampling(header))
    return out.getvalue()


def _bare(image: Image.Image, mode: str) -> Image.Image:
    """A copy of `image` in `mode` with an empty `info`.

    Encoders copy some `info` keys into the file on their own (JPEG: the comment; PNG: the ICC
    profile and transparency), so a copy that has none cannot carry metadata, whatever the Pillow
    version. A copy: `image` may be the caller's own object.
    """
    copy = image.convert(mode) if image.mode != mode else image.copy()
    copy.info = {}
    return copy


def describe_limits(limits: ImageLimits) -> str:
    """One line for the UI, e.g. 'JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF up to 50 MB and 120 megapixels'."""
    return f"{_FORMAT_NAMES} up to {_short_size(limits.max_bytes)} and {limits.max_pixels / 1e6:g} megapixels"


def read_image(
    source: Any,
    *,
    limits: ImageLimits = ImageLimits(),
    min_side: int | None = None,
    name: str | None = None,
) -> LoadedImage:
    """Read, check and decode one image; raise InvalidImageError (ImageTooLargeError for limits).

    `source`: a path (str or os.PathLike), bytes/bytearray/memoryview, a binary file object, a PIL
    image, or a uint8 numpy array (HxW, HxWx1, HxWx3 or HxWx4). `min_side`: the shortest side the
    model layer needs; JPEGs may then be decoded at 1/2, 1/4 or 1/8 scale, never below it.
    `name`: what messages call the input (defaults to the path, or a placeholder like "<bytes>").
    """
    if min_side is not None and (isinstance(min_side, bool) or not isinstance(min_side, int) or min_side < 1):
        raise ValueError(f"min_side must be a positive integer or None, got {min_side!r}")
    if isinstance(source, Image.Image):
        return _from_pil(source, _printable(name or "<image>"), limits)
    if isinstance(source, np.ndarray):
        return _from_array(source, _printable(name or "<array>"), limits)
    data, label = _read_bytes(source, name, limits)
    return _decode(data, label, limits, min_side)


# --- reading the encoded bytes -------------------------------------------------------------------


def _read_bytes(source: Any, name: str | None, limits: ImageLimits) -> tuple[bytes, str]:
    """The encoded bytes, read once and never more than max_bytes + 1 of them, and the label."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = _printable(name or "<bytes>")
        _check_num_bytes(memoryview(source).nbytes, label, limits)
        data = bytes(source)  # no copy for bytes; bytearray/memoryview could change under us
    elif isinstance(source, (str, os.PathLike)):
        label = _printable(name or os.fsdecode(source))
        data = _read_path(source, label, limits)
    elif callable(getattr(source, "read", None)):
        label = _printable(name or _stream_name(source))
        data = _read_stream(source, label, limits)
    else:
        raise InvalidImageError(
            f"cannot read an image from a {type(source).__name__}; "
            "pass a path, bytes, a binary file, a PIL image or a uint8 numpy array"
        )
    if not data:
        raise InvalidImageError(f"{label} is empty (0 bytes)")
    return data, label


def _read_path(path: str | os.PathLike[Any], label: str, limits: ImageLimits) -> bytes:
    try:
        info = os.stat(path)
    except ValueError:  # a NUL byte in the path
        raise InvalidImageError(f"{label} is not a valid file path") from None
    except OSError as err:
        raise _path_error(err, label) from None
    if stat.S_ISDIR(info.st_mode):
        raise InvalidImageError(f"{label} is a folder, not an image file")
    if stat.S_ISREG(info.st_mode):  # a pipe or device has no size up front; the bounded read still holds
        _check_num_bytes(info.st_size, label, limits)
    try:
        with open(path, "rb") as file:
            return _read_stream(file, label, limits)
    except OSError as err:  # gone or locked between stat and open
        raise _path_error(err, label) from None


def _path_error(err: OSError, label: str) -> InvalidImageError:
    if isinstance(err, FileNotFoundError):
        return InvalidImageError(f"no such file: {label}")
    if isinstance(err, PermissionError):
        return InvalidImageError(f"cannot read {label}: permission denied")
    return InvalidImageError(f"cannot read {label}: {err.strerror or err}")


def _read_stream(stream: IO[bytes], label: str, limits: ImageLimits) -> bytes:
    """Read to the end, but stop one byte past the limit: an endless upload must not fill memory."""
    chunks: list[bytes] = []
    total = 0
    try:
        while total <= limits.max_bytes:
            chunk = stream.read(limits.max_bytes + 1 - total)
            if not chunk:  # b"" at the end; None from a non-blocking stream with nothing ready
                break
            if isinstance(chunk, str):
                raise InvalidImageError(f"{label} was opened in text mode; open image files with 'rb'")
            chunks.append(bytes(chunk))
            total += len(chunk)
    except OSError as err:
        raise InvalidImageError(f"cannot read {label}: {err.strerror or err}") from None
    if total > limits.max_bytes:
        raise ImageTooLargeError(f"{label} is larger than the limit of {_size_text(limits.max_bytes)}")
    return b"".join(chunks)


def _stream_name(stream: Any) -> str:
    name = getattr(stream, "name", None)  # open() files have one; an int for fd-based files
    return os.fsdecode(name) if isinstance(name, (str, bytes)) else "<file>"


def _check_num_bytes(num_bytes: int, label: str, limits: ImageLimits) -> None:
    if num_bytes > limits.max_bytes:
        raise ImageTooLargeError(f"{label} is {_size_text(num_bytes)}; the limit is {_size_text(limits.max_bytes)}")


# --- opening and decoding ------------------------------------------------------------------------


def _decode(data: bytes, label: str, limits: ImageLimits, min_side: int | None) -> LoadedImage:
    # Pillow warns at its own default cap (89.5 MP), which is below our default limit, so a 108 MP
    # phone photo that our explicit check accepts would warn (or, as an error, be refused). Our
    # check decides; Pillow's DecompressionBombError (twice its cap) is still caught below.
    # catch_warnings is process-wide on Python 3.11: if two threads race here, the worst outcome is
    # this one "ignore" filter outliving the block, which is harmless.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = _open(data, label, limits)
        header_size, image_format = img.size, img.format
        if min_side is not None and isinstance(img, JpegImagePlugin.JpegImageFile):
            # draft() picks the largest scale s in 8, 4, 2, 1 with s <= min(W // min_side, H // min_side),
            # so both decoded sides stay >= min_side. An EXIF rotation swaps the sides, but the
            # request is the same for both, so it needs no special case.
            img.draft("RGB", (min_side, min_side))
        # After draft(): img.size and img.mode are what the decoder will produce.
        _check_decoded_bytes(
            img.mode, img.size, label, limits, header_size=header_size,
            transposed=_header_says_rotate(img), transparency="transparency" in img.info,
        )
        _load(img, label)
    return _finish(img, header_size, image_format, data, label, limits)


def _open(data: bytes, label: str, limits: ImageLimits) -> ImageFile.ImageFile:
    """Parse the header only, and check width and height before any pixel is decoded."""
    try:
        img = Image.open(io.BytesIO(data), formats=_FORMATS)
    except UnidentifiedImageError:
        raise InvalidImageError(f"{label} is not an image Classifr can read (accepted: {_FORMAT_NAMES})") from None
    except Image.DecompressionBombError as err:
        raise _bomb_error(data, label, limits, err) from None
    except _DECODE_ERRORS as err:
        raise InvalidImageError(f"{label} is truncated or corrupt: {_reason(err)}") from None
    _check_dimensions(img.size, label, limits)
    return img


def _bomb_error(data: bytes, label: str, limits: ImageLimits, err: Exception) -> ImageTooLargeError:
    """The error for an image that Image.open refused before our own check could see its size.

    Image.open raises DecompressionBombError above twice Pillow's MAX_IMAGE_PIXELS (179 MP by
    default). To name the size anyway, parse the header again with the format's own parser, which
    (unlike Image.open) has no pixel cap. Only this error path pays for that.
    """
    size = _header_size(data)
    if size is None:
        return ImageTooLargeError(f"{label} is too large: {_reason(err)}")
    try:
        _check_dimensions(size, label, limits)
    except ImageTooLargeError as ours:
        return ours
    # Within our limit (configured above Pillow's cap), but Pillow will not go there without a
    # global setting, which this module never changes.
    width, height = size
    return ImageTooLargeError(
        f"{label} is {width}x{height} = {width * height:,} pixels; "
        f"the image reader refuses more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,}"
    )


def _header_size(data: bytes) -> tuple[int, int] | None:
    prefix = data[:16]
    for fmt in _FORMATS:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        verdict = accept(prefix) if accept is not None else True
        if factory is None or not verdict or isinstance(verdict, str):  # a str: "looks like it, unsupported"
            continue
        try:
            return factory(io.BytesIO(data), "").size
        except Exception:  # only wording an error message: any failure just means "size unknown"
            continue
    return None


def _check_dimensions(size: tuple[int, int], label: str, limits: ImageLimits) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InvalidImageError(f"{label} has no pixels ({width}x{height})")
    if max(width, height) > limits.max_side:
        raise ImageTooLargeError(f"{label} is {width}x{height} pixels; the limit is {limits.max_side:,} pixels a side")
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"{label} is {width}x{height} = {width * height:,} pixels; the limit is {limits.max_pixels:,}"
        )


def decoded_bytes(mode: str, size: tuple[int, int], *, transposed: bool = False, transparency: bool = False) -> int:
    """The most memory that decoding an image of `mode` and `size` into RGB holds at once.

    The decoded buffer in its own mode, its EXIF-rotated copy when there is one (both are alive),
    and what `_to_rgb` allocates on top. Pillow keeps 1, L and P in 1 byte a pixel, I;16 in 2 and
    every other mode, RGB included, in 4.
    """
    pixels = size[0] * size[1]
    source = pixels * _pixel_bytes(mode)
    return source * (2 if transposed else 1) + pixels * _conversion_bytes(mode, transparency)


def _pixel_bytes(mode: str) -> int:
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _conversion_bytes(mode: str, transparency: bool) -> int:
    """Bytes a pixel that `_to_rgb` adds to the source buffer at its peak."""
    if mode == "RGB" and not transparency:
        return 0  # returned as it is
    if mode.startswith("I;16"):
        return 15  # numpy copy (2), two uint32 temporaries (8), grey (1), RGB (4)
    if mode in ("I", "F"):
        return 40  # numpy copy (4), up to three float64 temporaries and a mask (25), grey (1), RGB (4), rounded up
    if mode in _ALPHA_MODES or transparency:
        return (0 if mode == "RGBA" else 4) + 4  # the RGBA copy, the white RGB it is pasted onto
    return 4  # 1, L, P, CMYK, YCbCr, LAB, HSV: the RGB result


def _header_says_rotate(img: Image.Image) -> bool:
    """Whether the EXIF orientation, read without decoding, asks for a rotated copy.

    A PNG's eXIf chunk may follow the pixels, and Pillow's getexif() would decode them to find it;
    `_apply_exif_orientation` checks the budget again once the pixels are in.
    """
    if img.format == "PNG" and "exif" not in img.info:
        return False
    try:
        return img.getexif().get(ExifTags.Base.Orientation, 1) not in (None, 1)
    except Exception:  # an unreadable block is reported (and ignored) by _apply_exif_orientation
        return False


def _check_decoded_bytes(
    mode: str,
    size: tuple[int, int],
    label: str,
    limits: ImageLimits,
    *,
    header_size: tuple[int, int] | None = None,
    transposed: bool = False,
    transparency: bool = False,
) -> None:
    needed = decoded_bytes(mode, size, transposed=transposed, transparency=transparency)
    if needed <= limits.max_decoded_bytes:
        return
    width, height = header_size or size
    reduced = f" (decoded at {size[0]}x{size[1]})" if header_size not in (None, size) else ""
    raise ImageTooLargeError(
        f"{label} is {width}x{height} pixels{reduced}: {_short_size(needed)} once decoded; "
        f"the limit is {_short_size(limits.max_decoded_bytes)}"
    )


def _load(img: Image.Image, label: str) -> None:
    """Decode the pixels now (first frame of an animation), so no lazy decoding is left for later."""
    try:
        img.load()
    except Image.DecompressionBombError as err:  # a TIFF tile or GIF frame larger than the header said
        raise ImageTooLargeError(f"{label} is too large: {_reason(err)}") from None
    except _DECODE_ERRORS as err:
        raise InvalidImageError(f"{label} is truncated or corrupt: {_reason(err)}") from None


def _finish(
    img: Image.Image,
    header_size: tuple[int, int],
    image_format: str | None,
    data: bytes | None,
    label: str,
    limits: ImageLimits,
) -> LoadedImage:
    """Orientation and colour, shared by every source once the pixels are in memory."""
    decoded_size = img.size
    img, swapped = _apply_exif_orientation(img, label, limits)
    rgb = _to_rgb(img, label)
    original_size = (header_size[1], header_size[0]) if swapped else header_size
    logger.debug(
        "read %s: %s %dx%d, decoded at %dx%d", label, image_format or img.mode, *original_size, *decoded_size
    )
    return LoadedImage(
        image=rgb,
        original_size=original_size,
        format=image_format,
        num_bytes=len(data) if data is not None else 0,
        data=data,
        name=label,
    )


def _apply_exif_orientation(img: Image.Image, label: str, limits: ImageLimits) -> tuple[Image.Image, bool]:
    """Rotate/flip as the EXIF orientation says; also return whether width and height swapped.

    A broken EXIF block is common (editors, messengers) and the pixels are still fine, so it costs
    only the rotation, never the image.
    """
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as err:  # EXIF parsing fails in many ways; none of them is fatal
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", label, _reason(err))
        return img, False
    if orientation in (None, 1):
        return img, False  # exif_transpose would copy the image for nothing
    # The rotated copy and the decoded image are both alive (a PNG's late eXIf was not counted yet).
    _check_decoded_bytes(img.mode, img.size, label, limits, transposed=True, transparency="transparency" in img.info)
    try:
        # Not in place: if it fails half way, `img` is untouched and original_size stays right.
        return ImageOps.exif_transpose(img), orientation in _SWAPPING_ORIENTATIONS
    except Exception as err:
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", label, _reason(err))
        return img, False


def _to_rgb(img: Image.Image, label: str) -> Image.Image:
    """RGB, converted the way each mode needs rather than by a blanket convert("RGB")."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode == "I" or mode.startswith("I;16") or mode == "F":
        # Plain convert clips: a 16-bit mid grey (32768) would come out white.
        return _high_depth_to_gray(img).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        # Transparent pixels keep whatever colour they had, often black; a logo on a transparent
        # background must not turn into a black square, so composite onto white.
        return _on_white(img if img.mode == "RGBA" else img.convert("RGBA"))
    try:
        # L, 1, P, CMYK (Pillow already undid Adobe's inverted CMYK while decoding), YCbCr, LAB, HSV.
        return img.convert("RGB")
    except ValueError:
        raise InvalidImageError(f"{label} has colour mode {mode}, which cannot be converted to RGB") from None


def _high_depth_to_gray(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey -> 8-bit grey, scaled by the range of the type."""
    values = np.asarray(img)
    if img.mode != "F" and values.min() >= 0 and values.max() <= 65535:
        # 16-bit range (also 'I' images that hold 16-bit data): 65535 -> 255, 32768 -> 128.
        scaled = (values.astype(np.uint32) + 128) // 257
    else:
        scaled = _stretch(values.astype(np.float64))
    return Image.fromarray(scaled.astype(np.uint8))


def _stretch(values: np.ndarray) -> np.ndarray:
    """Min-max scale to 0-255; there is no fixed range to go by. NaN and infinities count as the minimum."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = values[finite].min(), values[finite].max()
    values = np.where(finite, values, low)
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low)))


def _on_white(rgba: Image.Image) -> Image.Image:
    # Pasting with the alpha band as the mask is compositing onto an opaque background, and needs
    # one RGB buffer instead of three RGBA ones (decoded_bytes counts it).
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba)
    return background


# --- in-memory sources ---------------------------------------------------------------------------


def _from_pil(img: Image.Image, label: str, limits: ImageLimits) -> LoadedImage:
    """A PIL image the caller made or opened. No draft mode: the object is the caller's, not ours.

    Nothing is done to it in place; when it is already upright RGB, the result holds that same object.
    """
    _check_dimensions(img.size, label, limits)  # an Image.open() result may not be decoded yet
    _check_decoded_bytes(img.mode, img.size, label, limits, transparency="transparency" in img.info)
    with warnings.catch_warnings():  # see _decode
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        _load(img, label)
    return _finish(img, img.size, img.format, None, label, limits)


def _from_array(array: np.ndarray, label: str, limits: ImageLimits) -> LoadedImage:
    """A decoded array, as Gradio's webcam and numpy-minded callers give: HxW or HxWx{1,3,4} uint8."""
    if array.dtype != np.uint8:
        raise InvalidImageError(f"{label} has dtype {array.dtype}; expected uint8 (values 0-255)")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise InvalidImageError(f"{label} has shape {array.shape}; expected HxW, HxWx3 (RGB) or HxWx4 (RGBA)")
    height, width = array.shape[:2]
    _check_dimensions((width, height), label, limits)
    mode = "L" if array.ndim == 2 else ("RGB" if array.shape[2] == 3 else "RGBA")
    _check_decoded_bytes(mode, (width, height), label, limits)
    img = Image.fromarray(np.ascontiguousarray(array))  # 2-D -> L, 3 channels -> RGB, 4 -> RGBA
    return _finish(img, img.size, None, None, label, limits)


# --- message helpers -----------------------------------------------------------------------------


def _size_text(num_bytes: int) -> str:
    """'2,345 bytes' or '60.3 MB (63,230,000 bytes)': exact, and readable when large."""
    if num_bytes < _MB:
        return f"{num_bytes:,} bytes"
    return f"{_short_size(num_bytes)} ({num_bytes:,} bytes)"


def _short_size(num_bytes: int) -> str:
    if num_bytes < _MB:
        return f"{num_bytes:,} bytes"
    return f"{round(num_bytes / _MB, 1):g} MB"


def _reason(err: BaseException) -> str:
    """Pillow's own words, on one short line."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _printable(name: str) -> str:
    """Messages are one line: a file name with a newline in it must not break that."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
