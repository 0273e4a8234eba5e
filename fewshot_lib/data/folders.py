"""Bring your own images: load a folder of pictures as a few-shot target set.

What is accepted (one folder, not recursive, files sorted by name):

* PNG, JPEG, BMP, GIF, WebP and TIFF files, any size.
* Any mode becomes 8-bit RGB by its real range: 8-bit as is; 16-bit greyscale (PNG/TIFF) ÷ 257; 32-bit integer
  TIFF by its declared bit depth; float greyscale TIFF must hold values in [0, 1] (× 255). Palette, greyscale,
  CMYK and YCbCr images are converted; transparent pixels (RGBA, LA, palette transparency) are composited on
  white, like the emoji data. Colour profiles (ICC) are not applied.
* Phone photos are turned upright by their EXIF orientation tag.
* Animated or multi-page files (GIF, WebP, TIFF) use their first frame, with a warning.
* Each image is resized so its short side equals ``size`` and centre-cropped to a square; an image whose short
  side is under half of ``size`` is upscaled with a warning (it will look blurred).

What happens to the rest: hidden files (``.DS_Store``) are ignored; subfolders are ignored with a warning. Every
other problem — a file that is not an image, a truncated or undecodable image, a decompression bomb (more
pixels than ``PIL.Image.MAX_IMAGE_PIXELS``), a float image outside [0, 1], a dangling symlink or a symlink
loop, a FIFO or device — raises :class:`ImageLoadError` (a ``ValueError``) naming the file(s) and the reason,
and nothing is loaded. With ``skip_bad=True`` those files are skipped instead, each with a logged warning.
Symlinks to files are followed (resolved once, so loops are detected, never followed forever).
"""

from __future__ import annotations

import errno
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .emoji import to_tensor

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SKIP_BAD_HINT = "pass skip_bad=True (in a notebook run: `fewshot run -p skip_bad true`)"


class ImageLoadError(ValueError):
    """An image file or folder that cannot be used; the message names the file and the reason."""


def shown(path: Path) -> str:
    """``path`` as the user gave it, plus where it resolved to when that was relative (notebooks run elsewhere)."""
    return str(path) if path.is_absolute() else f"{path} (resolved to {path.resolve()})"


# --------------------------------------------------------------------------------------------- one image
def _tiff_bits(img: Image.Image) -> tuple[int | None, bool]:
    """``(bits per sample, signed)`` declared by a TIFF, else ``(None, False)``."""
    tags = getattr(img, "tag_v2", None)
    if not tags:
        return None, False
    bits = tags.get(258)
    bits = bits[0] if isinstance(bits, tuple) else bits
    fmt = tags.get(339)
    fmt = fmt[0] if isinstance(fmt, tuple) else fmt
    return (int(bits) if bits else None), fmt == 2


def _grey_to_rgb(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")


def _to_rgb_on_white(
    img: Image.Image, path: Path, tiff_bits: tuple[int | None, bool] = (None, False)
) -> Image.Image:
    """8-bit RGB by the image's declared range (never its own min–max), transparency composited on white.

    ``tiff_bits``: what the original file declared (an EXIF-transposed copy no longer carries TIFF tags)."""
    mode = img.mode
    if mode.startswith("I;16"):  # 16-bit greyscale: 65535 → 255
        return _grey_to_rgb(np.asarray(img, dtype=np.float64) / 257.0)
    if mode == "I":  # 32-bit integer (TIFF); scale by the declared bit depth
        bits, signed = tiff_bits
        bits = bits or 32
        top = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        return _grey_to_rgb(np.asarray(img, dtype=np.float64) * (255.0 / top))
    if mode == "F":  # float greyscale: only [0, 1] has an unambiguous meaning
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ImageLoadError(f"{path}: float image holds NaN or infinite values.")
        low, high = float(arr.min()), float(arr.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise ImageLoadError(
                f"{path}: float image with values in [{low:.4g}, {high:.4g}]; only float images "
                "in [0, 1] are accepted (save it as 8- or 16-bit instead)."
            )
        return _grey_to_rgb(arr * 255.0)
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def open_rgb(path: str | Path) -> Image.Image:
    """Decode one image file to an upright 8-bit RGB ``PIL.Image`` (see the module docstring for the rules).

    Raises :class:`ImageLoadError` naming ``path`` for anything that cannot be decoded safely.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; a few-shot image never needs it.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                frames = getattr(img, "n_frames", 1)
                if frames > 1:
                    log.warning("%s has %d frames; using the first.", path, frames)
                img.load()
                bits = _tiff_bits(img)
                try:
                    upright = ImageOps.exif_transpose(img)
                except Exception as err:  # a malformed EXIF block must not lose an otherwise good image
                    log.warning("%s: EXIF orientation unreadable (%s); using the image as stored.", path, err)
                    upright = img
                return _to_rgb_on_white(upright, path, bits)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageLoadError(
            f"{path}: refused as a possible decompression bomb ({err}). If the file is genuine, "
            "shrink it, or raise PIL.Image.MAX_IMAGE_PIXELS."
        ) from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image Pillow can decode (unknown format or corrupt).") from None
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: file disappeared or is a dangling link.") from None
    except Exception as err:  # Pillow raises OSError, SyntaxError, struct.error, … for broken files
        raise ImageLoadError(
            f"{path}: could not be decoded, truncated or corrupt? ({type(err).__name__}: {err})"
        ) from None


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize so the short side is ``size`` (high-quality filter), then crop the central square."""
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.LANCZOS)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def read_image(path: str | Path, size: int) -> np.ndarray:
    """One image file as ``[size, size, 3]`` uint8 (decoded by :func:`open_rgb`, resized and centre-cropped)."""
    return np.asarray(resize_center_crop(open_rgb(path), size), dtype=np.uint8)


# ------------------------------------------------------------------------------------------- the folder
def _entry_problem(entry: Path) -> str | None:
    """Why ``entry`` (not hidden, not a folder) cannot be an image file, or ``None``."""
    if entry.is_symlink():
        try:
            target = entry.resolve(strict=True)
        except RuntimeError:  # some Python versions report a loop this way
            return "symlink loop"
        except FileNotFoundError:
            return f"dangling symlink (points to {entry.readlink()})"
        except OSError as err:
            return "symlink loop" if err.errno == errno.ELOOP else f"unreadable symlink ({err.strerror})"
        if not target.is_file():
            return f"symlink to {target}, which is not a regular file"
    elif not entry.is_file():
        return "not a regular file (FIFO, socket or device)"
    if entry.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image ({entry.suffix or 'no suffix'}; accepted: {', '.join(sorted(IMAGE_SUFFIXES))})"
    return None


def _is_folder(entry: Path) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop: not a folder, reported as a bad file
        return False


def list_images(folder: str | Path, skip_bad: bool = False) -> list[Path]:
    """Image files in ``folder`` (sorted; hidden files ignored, subfolders ignored with a warning).

    Anything else (non-image files, dangling links, symlink loops, FIFOs) raises :class:`ImageLoadError`
    listing the files and reasons, unless ``skip_bad``, which skips each with a logged warning.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"Image folder {shown(folder)} does not exist.")
    if not folder.is_dir():
        raise NotADirectoryError(f"{shown(folder)} is a file, not a folder of images.")
    images, problems, subfolders, hidden = [], [], [], 0
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            hidden += 1
        elif _is_folder(entry):
            subfolders.append(entry.name)
        elif (problem := _entry_problem(entry)) is not None:
            problems.append((entry, problem))
        else:
            images.append(entry)
    if hidden:
        log.info("%s: ignored %d hidden file(s).", folder, hidden)
    if subfolders:
        log.warning(
            "%s: ignoring %d subfolder(s) %s (folders are not searched recursively).",
            folder,
            len(subfolders),
            subfolders[:5],
        )
    if problems and not skip_bad:
        details = [f"{p.name}: {why}" for p, why in problems[:5]]
        raise ImageLoadError(
            f"{shown(folder)} contains {len(problems)} file(s) that are not images (or not readable): "
            f"{details}{' …' if len(problems) > 5 else ''}. Remove them or {SKIP_BAD_HINT}."
        )
    for path, why in problems:
        log.warning("Skipped %s: %s.", path, why)
    if not images:
        raise ImageLoadError(
            f"Image folder {shown(folder)} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})."
        )
    return images


def load_image_folder(
    folder: str | Path, size: int = 32, min_images: int = 1, skip_bad: bool = False
) -> torch.Tensor:
    """Load every image in ``folder`` as ``[N, 3, size, size]`` in ``[-1, 1]``.

    Args:
        folder: a folder of image files (not recursive).
        size: output side in pixels.
        min_images: raise when fewer usable images are found (e.g. the number of shots you need).
        skip_bad: skip (with a logged warning each) instead of raising on unusable or undecodable files.

    Raises ``FileNotFoundError`` / ``NotADirectoryError`` for a missing folder and :class:`ImageLoadError`
    (a ``ValueError``) naming every bad file; nothing is half-loaded.
    """
    if size < 4:
        raise ValueError(f"size must be at least 4 pixels, got {size}")
    folder = Path(folder)
    paths = list_images(folder, skip_bad)
    arrays, bad, tiny = [], [], []
    for path in paths:
        try:
            img = open_rgb(path)
        except ImageLoadError as err:
            bad.append((path, str(err)))
            continue
        if 2 * min(img.size) < size:
            tiny.append(f"{path.name} ({img.size[0]}×{img.size[1]})")
        arrays.append(np.asarray(resize_center_crop(img, size), dtype=np.uint8))
    if bad and not skip_bad:
        details = [why.replace(str(path), path.name) for path, why in bad[:5]]
        raise ImageLoadError(
            f"Could not read {len(bad)} of {len(paths)} image(s) in {shown(folder)}: {details}"
            f"{' …' if len(bad) > 5 else ''}. Fix or remove them, or {SKIP_BAD_HINT}."
        )
    for path, why in bad:
        log.warning("Skipped %s", why)
    if tiny:
        log.warning(
            "%s: %d image(s) have a short side under %d px and were upscaled more than 2× to %d px "
            "(expect blur): %s%s",
            folder,
            len(tiny),
            size // 2,
            size,
            tiny[:10],
            " …" if len(tiny) > 10 else "",
        )
    if len(arrays) < min_images:
        skipped = f" ({len(bad)} skipped as unreadable)" if bad else ""
        raise ImageLoadError(
            f"{shown(folder)} has {len(arrays)} usable image(s){skipped}, fewer than the "
            f"{min_images} required."
        )
    return to_tensor(np.stack(arrays))
