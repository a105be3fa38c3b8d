"""One image file as the 8-bit RGB image the preprocessing takes, every failure in one line.

``check_image`` reads only the header (``images.open_images`` runs it on every image before a model
loads): a file PIL can identify, no larger than PIL's decompression-bomb limit (``2 x
Image.MAX_IMAGE_PIXELS`` pixels; between ``MAX_IMAGE_PIXELS`` and the limit the image is read without
PIL's warning, which would otherwise repeat for every such image), in a mode whose conversion is defined:

- 1, L, P, RGB exactly; LA, PA, RGBA, RGBX without their alpha (or padding) channel;
- CMYK, YCbCr and HSV by PIL's formulas: (255 - c)(255 - k) / 255, JPEG's full-range YCbCr, colorsys's HSV;
- 16-bit grayscale (I;16, I;16L, I;16B, I;16N) scaled to 8 bits as round(v / 257), the inverse of the
  usual 8 -> 16 bit expansion v * 257 (PIL's own ``convert("RGB")`` clips every value above 255 to white).

Refused: I (32-bit integers) and F (floats), whose white the mode does not define; LAB, which PIL converts
channel by channel rather than as a colour; any other mode. ``read_rgb`` decodes the whole file, so a
truncated one is found there.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from mech_interp.validation.errors import UsageError, reason

AS_RGB = ("1", "L", "P", "RGB", "LA", "PA", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV")  # PIL's convert is right
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_REFUSED_WHY = {
    "I": "32-bit integer samples, whose white the mode does not define",
    "F": "floating-point samples, whose white the mode does not define",
    "LAB": "CIELAB, which PIL converts to RGB channel by channel rather than as a colour",
}
ACCEPTED = (
    f"{', '.join(AS_RGB)} and 16-bit grayscale ({', '.join(SIXTEEN_BIT)}); save it as an 8-bit or 16-bit PNG"
)
# What PIL raises on a file it cannot decode (a truncated PNG is an OSError, a broken chunk a SyntaxError).
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, struct.error)
# (path, size, mtime) of headers already checked in this process: a study checks its folder once per
# experiment before anything runs, which for a large folder would otherwise read every header seven times.
_checked: set[tuple[str, int, int]] = set()


def _open(path: Path) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError as err:
            raise UsageError(f"image {str(path)!r} is too large to decode safely: {reason(err)}") from None
        except _UNREADABLE as err:
            empty = path.is_file() and path.stat().st_size == 0
            raise UsageError(
                f"cannot read image {str(path)!r}: {'the file is empty' if empty else reason(err)}: expected "
                "an image file PIL decodes (JPEG, PNG, WebP, BMP)"
            ) from None


def _check_mode(img: Image.Image, path: Path) -> None:
    if img.mode not in AS_RGB and img.mode not in SIXTEEN_BIT:
        why = _REFUSED_WHY.get(img.mode, "a mode without a defined conversion to RGB")
        raise UsageError(f"image {str(path)!r} has PIL mode {img.mode!r} ({why}): accepted modes {ACCEPTED}")


def check_image(path: Path) -> None:
    """Refuse ``path`` in one line when its header shows it cannot be read as RGB (see the module doc)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _checked:
        return
    with _open(path) as img:
        _check_mode(img, path)
    _checked.add(key)


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` (a mode ``check_image`` accepts) as 8-bit RGB."""
    if img.mode in SIXTEEN_BIT:
        wide = np.asarray(img).astype(np.uint32)  # I;16B arrives big-endian; the cast makes it native
        return Image.fromarray(((wide + 128) // 257).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def read_rgb(path: Path) -> Image.Image:
    """The image at ``path`` decoded as 8-bit RGB; refused in one line when it cannot be."""
    with _open(path) as img:
        _check_mode(img, path)
        try:
            img.load()
        except _UNREADABLE as err:
            raise UsageError(
                f"cannot read image {str(path)!r}: {reason(err)}: expected a complete image file"
            ) from None
        return to_rgb(img)
