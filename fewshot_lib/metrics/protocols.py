"""The two evaluation protocols of the few-shot papers, as one call each.

**Against a set** (CDC, MixDL: one target domain, ``k`` training shots): generate ``N`` images, compare them
with the *whole* target set (FID/KID/precision/recall/density/coverage) and with the ``k`` shots (intra-cluster
LPIPS, NN-modes, nearest-shot LPIPS), plus their own diversity (pairwise LPIPS) → :func:`evaluate_against_set`.

**Per unseen class** (LoFGAN, LSO: a conditional generator that takes ``k`` images of a class it never saw):
for every unseen class split its images into a fixed *conditioning pool* and a *held-out* set; generate
``n_per_class`` images, each from ``k`` images drawn from the pool; pool all fakes and all held-out reals for
FID/KID (LSO and original LoFGAN protocol: every held-out image, no resampling); average the per-class mean
pairwise LPIPS over classes (diversity inside a class) → :func:`evaluate_per_class`.

Features and embeddings are computed once per image set and shared by all metrics. Every returned
:class:`MetricResult` names its extractor; :func:`results_to_dict` turns a result dict into JSON for
``metrics.json``.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import numpy as np
import torch

from .diversity import intra_cluster_lpips, nn_modes, pairwise_lpips
from .features import FeatureExtractor
from .fid import fid, kid
from .pr import density_coverage, precision_recall
from .result import MetricResult, as_features, resolve_extractor
from .unseen_class import sample_episodes

log = logging.getLogger(__name__)

SET_METRICS = (
    "fid",
    "kid",
    "precision_recall",
    "density_coverage",
    "pairwise_lpips",
    "intra_cluster_lpips",
    "nn_modes",
)


def results_to_dict(results: dict[str, MetricResult], details: bool = False) -> dict[str, dict]:
    """``{name: MetricResult}`` → ``{name: {"value", "std", "extractor", "n_real", "n_fake", ...}}``."""
    return {name: r.as_dict(details=details) for name, r in results.items()}


def evaluate_against_set(
    fake: torch.Tensor,
    real: torch.Tensor,
    train: torch.Tensor | None = None,
    extractor: str | FeatureExtractor = "emoji",
    metrics: Iterable[str] = SET_METRICS,
    kid_subset_size: int = 1000,
    lpips_max_images: int = 500,
    seed: int = 0,
    device: str | torch.device | None = None,
    fake_embeddings: torch.Tensor | None = None,
) -> dict[str, MetricResult]:
    """CDC/MixDL protocol: ``fake [N,3,H,W]`` vs the whole target set ``real [M,3,H,W]`` and the shots ``train``.

    ``metrics`` picks from ``SET_METRICS``; the shot-based ones (intra-cluster LPIPS, NN-modes) need ``train``.
    ``real`` may also be precomputed features ``[M, D]`` (``extractor.features(real)``), reused across calls.
    ``fake_embeddings``: the fakes' distance embeddings ``[N, P]`` when the caller has them already; else they are
    computed once here for every metric that needs them.
    """
    ext = resolve_extractor(extractor, device)
    metrics = list(metrics)
    unknown = sorted(set(metrics) - set(SET_METRICS))
    if unknown:
        raise ValueError(f"Unknown metric(s) {unknown}; choose from {SET_METRICS}")
    out: dict[str, MetricResult] = {}
    if {"fid", "kid", "precision_recall", "density_coverage"} & set(metrics):
        fr, ff = as_features(real, ext, "real"), as_features(fake, ext, "fake")
        if "fid" in metrics:
            out["fid"] = fid(fr, ff, ext)
        if "kid" in metrics:
            out["kid"] = kid(fr, ff, ext, subset_size=kid_subset_size, seed=seed)
        if "precision_recall" in metrics:
            out.update(precision_recall(fr, ff, ext))
        if "density_coverage" in metrics:
            out.update(density_coverage(fr, ff, ext))
    shot_metrics = [m for m in ("intra_cluster_lpips", "nn_modes") if m in metrics]
    if shot_metrics and train is None:
        raise ValueError(f"{shot_metrics} need the training shots: pass train=[k, 3, H, W]")
    if fake_embeddings is None and ("pairwise_lpips" in metrics or shot_metrics):
        fake_embeddings = ext.distance_embedding(fake)  # [N, P], once for every LPIPS-style metric below
    if "pairwise_lpips" in metrics:
        out["pairwise_lpips"] = pairwise_lpips(fake_embeddings, ext, max_images=lpips_max_images, seed=seed)
    if shot_metrics:
        gen_emb, train_emb = fake_embeddings, ext.distance_embedding(train)
        if "intra_cluster_lpips" in metrics:
            out["intra_cluster_lpips"] = intra_cluster_lpips(gen_emb, train_emb, ext, seed=seed)
        if "nn_modes" in metrics:
            out["nn_modes"] = nn_modes(gen_emb, train_emb, ext)
    return out


def conditioning_split(
    images_by_class: dict[str, torch.Tensor], n_condition: int = 10, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split each class ``[n_c, 3, H, W]`` into a conditioning pool of ``n_condition`` images and the held-out rest.

    The order inside a class is a seeded permutation (fixed and reproducible, unlike LoFGAN's current
    unseeded one). Raises ``ValueError`` when a class has no image left to hold out.
    """
    cond, held = {}, {}
    for i, (c, x) in enumerate(images_by_class.items()):
        if len(x) <= n_condition:
            raise ValueError(f"class {c!r} has {len(x)} images; need more than n_condition={n_condition}")
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 100_003 + i))
        cond[c], held[c] = x[perm[:n_condition]], x[perm[n_condition:]]
    return cond, held


def evaluate_per_class(
    generate: Callable[[torch.Tensor], torch.Tensor],
    conditioning: dict[str, torch.Tensor],
    held_out: dict[str, torch.Tensor],
    k: int = 3,
    n_per_class: int = 128,
    batch: int = 64,
    extractor: str | FeatureExtractor = "emoji",
    kid_subset_size: int = 1000,
    seed: int = 0,
    device: str | torch.device | None = None,
    return_samples: bool = False,
):
    """LoFGAN/LSO protocol for a k-shot conditional generator.

    Args:
        generate: ``shots [B, k, 3, H, W] → images [B, 3, H, W]`` in ``[-1, 1]`` (on any device; moved to CPU).
        conditioning / held_out: ``{class: [n, 3, H, W]}`` for the *unseen* classes (see :func:`conditioning_split`).
        k: shots per generated image, drawn without replacement from the class's pool (seeded).
        n_per_class: generated images per class (128 in both papers).

    Returns ``{"fid", "kid", "precision", "recall", "lpips"}`` (``lpips`` = per-class mean pairwise LPIPS averaged
    over classes; per-class values in ``details``), and the fakes ``{class: [n_per_class, 3, H, W]}`` when
    ``return_samples``.
    """
    if set(conditioning) != set(held_out):
        raise ValueError("conditioning and held_out must have the same classes")
    ext = resolve_extractor(extractor, device)
    fakes, _ = sample_episodes(generate, conditioning, k=k, n_per_class=n_per_class, batch=batch, seed=seed)
    all_fake = torch.cat(list(fakes.values()))
    all_real = torch.cat(list(held_out.values()))
    fr, ff = ext.features(all_real), ext.features(all_fake)
    results: dict[str, MetricResult] = {
        "fid": fid(fr, ff, ext),
        "kid": kid(fr, ff, ext, subset_size=kid_subset_size, seed=seed),
    }
    results.update(precision_recall(fr, ff, ext))
    per_class = {c: pairwise_lpips(x, ext).value for c, x in fakes.items()}
    vals = np.array(list(per_class.values()))
    results["lpips"] = MetricResult(
        "pairwise_lpips_per_class",
        float(vals.mean()),
        ext.name,
        std=float(vals.std(ddof=1)) if len(vals) > 1 else None,
        n_real=len(all_real),
        n_fake=len(all_fake),
        details={"per_class": per_class, "k": k, "n_per_class": n_per_class},
    )
    return (results, fakes) if return_samples else results
