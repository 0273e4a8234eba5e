"""Few-shot sampling: k shots of a class, seen/unseen class splits, and episodic k-shot tasks.

Vocabulary used throughout the package:

* a **class** is a value of one label (by default ``subcategory``, e.g. ``animal-mammal``);
* **k-shot**: a method sees only ``k`` images of the target class/domain;
* **seen / unseen** classes: k-shot generators (LoFGAN, LSO) train on episodes from *seen* classes and are
  evaluated on *unseen* ones, which they never saw during training;
* an **episode** is one training example for such a generator: ``k`` images of one randomly chosen class.

Taught in: ``notebooks/00_data_and_setup.ipynb``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from .emoji import EmojiData

SPLIT_SEED = 2021  # the fixed seed behind the documented seen/unseen split; never change it silently


def sample_shots(
    data: EmojiData, k: int, seed: int = 0, by: str = "subcategory", cls: str | None = None
) -> EmojiData:
    """``k`` distinct images of one class, chosen reproducibly from ``seed``.

    With ``cls=None`` the class itself is drawn (from classes holding at least ``k`` images). Raises
    ``ValueError`` when the class has fewer than ``k`` images or nothing qualifies.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rng = np.random.default_rng(seed)
    labels = getattr(data, by)
    if cls is None:
        eligible = data.classes(by, min_count=k)
        if not eligible:
            raise ValueError(f"No {by} has {k} or more images (dataset of {len(data)} images).")
        cls = eligible[rng.integers(len(eligible))]
    index = np.nonzero(labels == cls)[0]
    if len(index) == 0:
        raise ValueError(f"No images with {by}={cls!r}.")
    if len(index) < k:
        raise ValueError(f"{by}={cls!r} has only {len(index)} images, fewer than the {k} shots requested.")
    return data.subset(np.sort(rng.choice(index, size=k, replace=False)))


def class_rank(name: str, seed: int = SPLIT_SEED) -> str:
    """A fixed pseudo-random rank of a class name (hex digest of ``seed:name``)."""
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def class_split(
    data: EmojiData, by: str = "subcategory", min_count: int = 10, n_unseen: int = 20, seed: int = SPLIT_SEED
) -> tuple[list[str], list[str]]:
    """The fixed, disjoint seen/unseen split of the classes that have at least ``min_count`` images.

    Each eligible class is ranked by a hash of its name (:func:`class_rank`); the ``n_unseen`` lowest ranks are
    unseen. The split depends only on the class names, so it is the same on every machine and run, and the
    ranking is shared by every selection: the unseen classes of two styles differ only where a class is
    eligible (≥ ``min_count`` images) in one style and not in the other.
    """
    classes = data.classes(by, min_count=min_count)
    if len(classes) <= n_unseen:
        raise ValueError(
            f"Only {len(classes)} {by} classes have ≥{min_count} images; cannot hold out {n_unseen}."
        )
    ranked = sorted(classes, key=lambda c: class_rank(c, seed))
    return sorted(ranked[n_unseen:]), sorted(ranked[:n_unseen])


def class_tensors(data: EmojiData, classes: list[str], by: str = "subcategory") -> dict[str, torch.Tensor]:
    """``{class: [n_c, 3, H, W] tensor in [-1, 1]}`` for the given classes (in the given order)."""
    labels = getattr(data, by)
    out = {}
    for c in classes:
        idx = np.nonzero(labels == c)[0]
        if len(idx) == 0:
            raise ValueError(f"No images with {by}={c!r}.")
        out[c] = data.subset(idx).tensors()
    return out


class EpisodeSampler:
    """Draws episodic k-shot tasks: each call picks ``batch`` random classes and ``k`` random images of each.

    A fresh random episode is drawn on every call from a ``torch.Generator`` (the LoFGAN reference re-seeds
    per item and so keeps revisiting a fixed pool; we do not).

    Args:
        images_by_class: ``{class: [n_c, 3, H, W]}``, e.g. from :func:`class_tensors` on the *seen* classes.
        k: shots per episode; every class must have at least ``k`` images.
        batch: episodes per call.
        generator: a seeded ``torch.Generator`` for reproducible episodes.
    """

    def __init__(
        self,
        images_by_class: dict[str, torch.Tensor],
        k: int,
        batch: int = 8,
        generator: torch.Generator | None = None,
    ):
        too_small = {c: len(x) for c, x in images_by_class.items() if len(x) < k}
        if too_small:
            raise ValueError(f"Classes with fewer than k={k} images: {too_small}")
        if not images_by_class:
            raise ValueError("EpisodeSampler needs at least one class.")
        self.classes = list(images_by_class)
        self.images = [images_by_class[c] for c in self.classes]
        self.k, self.batch = k, batch
        self.generator = generator or torch.Generator().manual_seed(0)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(shots [batch, k, 3, H, W], class_index [batch])`` (index into ``self.classes``)."""
        cls = torch.randint(len(self.classes), (self.batch,), generator=self.generator)
        shots = []
        for c in cls.tolist():
            pool = self.images[c]
            pick = torch.randperm(len(pool), generator=self.generator)[: self.k]
            shots.append(pool[pick])
        return torch.stack(shots), cls


def draw_shot_indices(n_images: int, n_shots: int, shots_seed: int) -> list[int]:
    """Which ``n_shots`` of ``n_images`` form the shot set of ``shots_seed``: sorted
    ``numpy.random.default_rng(shots_seed).choice(n_images, n_shots, replace=False)``. One rule for notebook 04,
    ``scripts/train_adaptation.py`` and the benchmark, so a shipped adaptation is judged on the shots it learnt."""
    return np.sort(np.random.default_rng(shots_seed).choice(n_images, n_shots, replace=False)).tolist()
