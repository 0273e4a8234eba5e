"""LoFGAN's ``.npy`` dataset layout: one array ``[classes, per_class, H, W, 3]`` of uint8 RGB.

The k-shot papers (LoFGAN, LSO, MatchingGAN, F2GAN) distribute Flowers, Animal Faces and VGGFace in this
layout, with the first classes *seen* (training) and the rest *unseen* (evaluation).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .emoji import to_tensor


def load_npy_classes(path: str | Path, mmap: bool = True) -> np.ndarray:
    """Load and validate a ``[classes, per_class, H, W, 3]`` uint8 array (memory-mapped by default)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No .npy dataset at {path}.")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{path} is not a readable .npy array: {err}") from err
    if arr.ndim != 5 or arr.shape[-1] != 3:
        raise ValueError(f"{path} has shape {arr.shape}; expected [classes, per_class, H, W, 3].")
    if arr.dtype != np.uint8:
        raise ValueError(f"{path} has dtype {arr.dtype}; expected uint8 RGB.")
    if arr.shape[2] != arr.shape[3]:
        raise ValueError(f"{path} holds {arr.shape[2]}×{arr.shape[3]} images; expected square images.")
    return arr


def npy_class_tensors(arr: np.ndarray, classes: range | list[int]) -> dict[str, torch.Tensor]:
    """``{str(class_index): [per_class, 3, H, W] in [-1, 1]}`` for the given class indices."""
    return {str(c): to_tensor(np.asarray(arr[c])) for c in classes}
