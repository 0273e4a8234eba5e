"""Correspondence score: does the adapted generator still draw *the same thing* for the same latent?

A domain-adaptation method such as CDC promises that ``G_target(z)`` is the target-domain *counterpart* of
``G_source(z)``: the noto "grinning face" becomes a fluent "grinning face", not some other emoji. Natural-image
benchmarks (FFHQ → sketches) can only show this by eye. The embedded emoji data can measure it, because every
concept exists in several styles with the same labels.

**Definition.** Given latents ``z_1..z_N``, source images ``s_i = G_source(z_i)`` and adapted images
``t_i = G_target(z_i)``, and two labelled *galleries* of real images — one in the source style (all noto
images) and one in the target style (all fluent_3d images):

1. label every source image by its nearest real image in the source gallery, ``a_i = label(NN_src(s_i))``;
2. label every adapted image by its nearest real image in the target gallery, ``b_i = label(NN_tgt(t_i))``;
3. ``correspondence = (1/N) Σ_i [a_i == b_i]``.

Nearest means the smallest squared Euclidean distance between feature vectors of the extractor (default: the
project's emoji network, which was trained to recognise concepts across styles). Searching each image in a
gallery of *its own* style removes the style from the comparison: only "what is drawn" decides the label.
Labels are subcategories by default (~95 classes such as ``face-smiling``, ``animal-mammal``); ``key`` (the
exact emoji, ~1600 classes) is a much stricter variant.

**Chance level.** A generator that ignores ``z``'s source meaning still agrees sometimes — e.g. when both
generators draw mostly faces. The score is therefore reported with ``chance``: the agreement after pairing
every ``a_i`` with the ``b`` of a random *other* latent (a seeded permutation, averaged over several), i.e.
what the same label frequencies give without any correspondence. Only ``value − chance`` is evidence of
correspondence.
"""

from __future__ import annotations

import numpy as np
import torch

from .diversity import squared_distances
from .features import FeatureExtractor
from .result import MetricResult, as_features, resolve_extractor


def nearest_labels(
    images: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: np.ndarray | list,
    extractor: str | FeatureExtractor = "emoji",
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Label of the nearest gallery image for each of ``images [N,3,H,W]`` (or features ``[N,D]``) → ``[N]``.

    ``gallery`` is ``[M,3,H,W]`` images (or precomputed ``[M,D]`` features) with ``gallery_labels`` of length M.
    """
    labels = np.asarray(gallery_labels)
    if len(labels) != len(gallery):
        raise ValueError(
            f"gallery_labels has {len(labels)} entries but the gallery has {len(gallery)} images"
        )
    ext = resolve_extractor(extractor, device)
    f_img = as_features(images, ext, "images")
    f_gal = as_features(gallery, ext, "gallery")
    idx = squared_distances(f_img, f_gal).argmin(dim=1).numpy()
    return labels[idx]


def correspondence_score(
    source_images: torch.Tensor,
    adapted_images: torch.Tensor,
    source_gallery: torch.Tensor,
    source_labels: np.ndarray | list,
    target_gallery: torch.Tensor,
    target_labels: np.ndarray | list,
    extractor: str | FeatureExtractor = "emoji",
    n_permutations: int = 20,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> MetricResult:
    """The fraction of latents whose adapted image shows the same concept as their source image.

    ``source_images[i]`` and ``adapted_images[i]`` (both ``[N,3,H,W]`` in [-1,1]) must come from the same
    latent. Galleries are real images (or their features) of the source and target styles with their labels
    (see the module docstring). Higher is better; ``details["chance"]`` is the permutation baseline and
    ``details["above_chance"]`` the difference.
    """
    if len(source_images) != len(adapted_images):
        raise ValueError(
            f"source_images ({len(source_images)}) and adapted_images ({len(adapted_images)}) must "
            "be paired: one of each per latent"
        )
    if len(source_images) < 2:
        raise ValueError("correspondence needs at least 2 latents")
    ext = resolve_extractor(extractor, device)
    a = nearest_labels(source_images, source_gallery, source_labels, ext)
    b = nearest_labels(adapted_images, target_gallery, target_labels, ext)
    value = float(np.mean(a == b))
    rng = np.random.default_rng(seed)
    n = len(a)
    chance_vals = []
    for _ in range(n_permutations):
        order = rng.permutation(n)  # pair a[order[j]] with b[order[j-1]]: a random cycle, never i with i
        chance_vals.append(float(np.mean(a[order] == b[np.roll(order, 1)])))
    chance = float(np.mean(chance_vals))
    return MetricResult(
        "correspondence",
        value,
        ext.name,
        n_real=len(target_gallery),
        n_fake=n,
        details={
            "chance": chance,
            "above_chance": value - chance,
            "source_labels": a.tolist(),
            "adapted_labels": b.tolist(),
        },
    )
