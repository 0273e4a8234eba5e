"""Bring your own images: load a folder of pictures as a few-shot target set.

Any size or mode (RGBA, palette, greyscale, 16-bit) becomes RGB; transparent pixels are composited on white
(like the emoji data); each image is resized so its short side equals ``size`` and centre-cropped to a square.

Bad input gets a clear error and nothing is half-loaded: a missing or empty folder, files that are not
images, images that cannot be decoded, or fewer images than the shots you asked for.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .emoji import to_tensor

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _to_rgb_on_white(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode.startswith("I"):  # 16/32-bit greyscale: scale to 8 bits
        arr = np.asarray(img, dtype=np.float64)
        arr = 255 * (arr - arr.min()) / max(arr.max() - arr.min(), 1)
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize so the short side is ``size`` (high-quality filter), then crop the central square."""
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.LANCZOS)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def list_images(folder: str | Path, skip_bad: bool = False) -> list[Path]:
    """Image files in ``folder`` (sorted; hidden files ignored). Non-image files raise unless ``skip_bad``."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"Image folder {folder} does not exist.")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a folder of images.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    others = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if others and not skip_bad:
        raise ValueError(f"{folder} contains files that are not images: {others[:5]}"
                         f"{' …' if len(others) > 5 else ''}. Remove them or pass skip_bad=True.")
    if not images:
        raise ValueError(f"Image folder {folder} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return images


def load_image_folder(folder: str | Path, size: int = 32, min_images: int = 1, skip_bad: bool = False
                      ) -> torch.Tensor:
    """Load every image in ``folder`` as ``[N, 3, size, size]`` in ``[-1, 1]``.

    Args:
        folder: a folder of image files (not recursive).
        size: output side in pixels.
        min_images: raise when fewer usable images are found (e.g. the number of shots you need).
        skip_bad: skip (instead of raising on) non-image and undecodable files.
    """
    if size < 4:
        raise ValueError(f"size must be at least 4 pixels, got {size}")
    arrays, bad = [], []
    for path in list_images(folder, skip_bad):
        try:
            with Image.open(path) as img:
                img.load()
                arrays.append(np.asarray(resize_center_crop(_to_rgb_on_white(img), size), dtype=np.uint8))
        except (UnidentifiedImageError, OSError, ValueError) as err:
            bad.append(f"{path.name} ({type(err).__name__})")
    if bad and not skip_bad:
        raise ValueError(f"Could not read {len(bad)} image(s) in {folder}: {bad[:5]}. "
                         "Fix or remove them, or pass skip_bad=True.")
    if len(arrays) < min_images:
        raise ValueError(f"{folder} has {len(arrays)} usable image(s), fewer than the {min_images} required.")
    return to_tensor(np.stack(arrays))
