"""LoFGAN's ``.npy`` dataset layout: one array ``[classes, per_class, H, W, 3]`` of RGB images.

The k-shot papers (LoFGAN, LSO, MatchingGAN, F2GAN) distribute Flowers, Animal Faces and VGGFace in this
layout. **Class order is the split**: the first ``n_seen`` classes are *seen* (training episodes), the rest are
*unseen* (evaluation); inside an unseen class the first ``n_condition`` images are the conditioning pool and the
rest are the FID reference set (the LSO / original-LoFGAN protocol). The presets below record those numbers:

============  ==============================  ===========================  ======  ===========  ===========
preset        file                            shape                        dtype   seen/unseen  n_condition
============  ==============================  ===========================  ======  ===========  ===========
``flowers``   ``flower_c8189_s128_data_rgb``  ``[102, 40, 128, 128, 3]``   uint8   85 / 17      10
``animals``   ``animal_128``                  ``[149, 100, 128, 128, 3]``  uint8   119 / 30     10
``vggface``   ``vgg_face_data_rgb``           ``[≥2354, 100, 64, 64, 3]``  float   1802 / 552   30
============  ==============================  ===========================  ======  ===========  ===========

The VGGFace file stores floats in ``[0, 1]`` (both reference codes multiply by 255) and its shape is inferred
from the LSO config (64 px, 552 unseen), not checked on the file — :func:`load_preset` says so if it differs.
Nothing is downloaded: get the files from the LoFGAN README's links and pass their path. Arrays are
memory-mapped (Animal Faces is ~730 MB, VGGFace as float32 ~11.6 GB); only the classes you ask for are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .emoji import to_tensor


@dataclass(frozen=True)
class NpyPreset:
    """A paper dataset in the ``.npy`` layout: file name, expected sizes and the documented split."""

    name: str
    filename: str
    n_classes: int | None  # None = "at least n_seen + n_unseen" (not verified on the file)
    per_class: int
    size: int
    n_seen: int
    n_unseen: int
    n_condition: int  # conditioning images per unseen class at evaluation
    float01: bool = False  # stored as float in [0, 1] instead of uint8


PRESETS: dict[str, NpyPreset] = {
    "flowers": NpyPreset("flowers", "flower_c8189_s128_data_rgb.npy", 102, 40, 128, 85, 17, 10),
    "animals": NpyPreset("animals", "animal_128.npy", 149, 100, 128, 119, 30, 10),
    "vggface": NpyPreset("vggface", "vgg_face_data_rgb.npy", None, 100, 64, 1802, 552, 30, float01=True),
}


def load_npy_classes(path: str | Path, mmap: bool = True, allow_float01: bool = False) -> np.ndarray:
    """Load and validate a ``[classes, per_class, H, W, 3]`` array (memory-mapped by default).

    uint8 RGB is expected; ``allow_float01=True`` also accepts float arrays in ``[0, 1]`` (VGGFace), checked
    on the first class only so a memory-mapped file is not read in full.
    """
    path = Path(path)
    if not path.is_file():
        link = " (a dangling symlink or a symlink loop)" if path.is_symlink() else ""
        raise FileNotFoundError(f"No .npy dataset at {path}{link}.")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise ValueError(f"{path} is empty (an interrupted download or copy?).")
    if head.startswith(b"PK\x03\x04"):
        raise ValueError(
            f"{path} is a .npz archive (several named arrays), not one .npy array. Save the images "
            "array alone: `np.save('data.npy', np.load(path)['<name>'])`."
        )
    if not head.startswith(b"\x93NUMPY"):
        # np.load would fall back to unpickling such a file; it is refused before that (allow_pickle=False too)
        raise ValueError(f"{path} is not a .npy file (no NumPy header; a pickle, text or random bytes?).")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as err:  # numpy raises ValueError, OSError, EOFError … for truncated or object arrays
        reason = (
            "it holds Python objects, which are not loaded"
            if ("allow_pickle" in str(err) or "Python objects" in str(err))
            else f"truncated or corrupt? ({type(err).__name__}: {err})"
        )
        raise ValueError(f"{path} is not a readable .npy array: {reason}") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path} did not load as one array (got {type(arr).__name__}).")
    if arr.ndim != 5 or arr.shape[-1] != 3:
        raise ValueError(f"{path} has shape {arr.shape}; expected [classes, per_class, H, W, 3].")
    if arr.dtype != np.uint8:
        if not (allow_float01 and np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(
                f"{path} has dtype {arr.dtype}; expected uint8 RGB"
                + (" or float in [0, 1]." if allow_float01 else ".")
            )
        first = np.asarray(arr[0])
        if not np.isfinite(first).all():
            raise ValueError(f"{path} holds NaN or infinite values (first class); expected floats in [0, 1].")
        if first.min() < 0 or first.max() > 1:
            raise ValueError(
                f"{path} is float with values in [{first.min():.3g}, {first.max():.3g}] "
                "(first class); expected [0, 1]."
            )
    if arr.shape[2] != arr.shape[3]:
        raise ValueError(f"{path} holds {arr.shape[2]}×{arr.shape[3]} images; expected square images.")
    return arr


def as_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 unchanged; float in ``[0, 1]`` → ``round(255·x)`` uint8."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint(images.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def npy_class_tensors(arr: np.ndarray, classes: range | list[int]) -> dict[str, torch.Tensor]:
    """``{str(class_index): [per_class, 3, H, W] in [-1, 1]}`` for the given class indices."""
    n = arr.shape[0]
    bad = [c for c in classes if not 0 <= c < n]
    if bad:
        raise ValueError(f"class indices {bad[:5]} out of range for an array of {n} classes")
    return {str(c): to_tensor(as_uint8(arr[c])) for c in classes}


def load_preset(name: str, path: str | Path, mmap: bool = True) -> tuple[np.ndarray, range, range]:
    """Load a paper dataset and its documented split: ``(array, seen class indices, unseen class indices)``.

    Raises ``ValueError`` for an unknown preset or a file whose shape contradicts the preset (naming both).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown .npy preset {name!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[name]
    arr = load_npy_classes(path, mmap=mmap, allow_float01=p.float01)
    n, per, size = arr.shape[0], arr.shape[1], arr.shape[2]
    want_n = p.n_classes if p.n_classes is not None else p.n_seen + p.n_unseen
    if (p.n_classes is not None and n != want_n) or n < want_n:
        raise ValueError(
            f"{path} has {n} classes; preset {name!r} expects {want_n} "
            f"({p.n_seen} seen + {p.n_unseen} unseen)."
        )
    if per != p.per_class or size != p.size:
        raise ValueError(
            f"{path} holds {per} images of {size} px per class; preset {name!r} expects "
            f"{p.per_class} of {p.size} px."
        )
    return arr, range(p.n_seen), range(p.n_seen, n)


def npy_unseen_pools(
    arr: np.ndarray, unseen: range | list[int], n_condition: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The fixed evaluation pools: per unseen class, the first ``n_condition`` images condition the generator
    and the rest are the held-out FID reference (``{class: [n, 3, H, W]}`` each)."""
    if not 0 < n_condition < arr.shape[1]:
        raise ValueError(
            f"n_condition={n_condition} must be in (0, {arr.shape[1]}) for {arr.shape[1]} per class"
        )
    all_ = npy_class_tensors(arr, unseen)
    return ({c: x[:n_condition] for c, x in all_.items()}, {c: x[n_condition:] for c, x in all_.items()})
