"""Diversity and memorisation: mean pairwise LPIPS, intra-cluster LPIPS (CDC), NN-modes (MixDL).

With only ``k`` training images, a generator can score well on fidelity by *copying* them. These metrics,
all built on an LPIPS-style perceptual distance (``extractor.distance_embedding``), expose that:

* **mean pairwise LPIPS** — the average distance between two generated images (LoFGAN/LSO/MixDL diversity);
* **intra-cluster LPIPS** (Ojha et al., CDC 2021) — assign every generated image to its *nearest training
  image* (the lowest LPIPS), then average the pairwise LPIPS *inside* each cluster, then over clusters. A
  generator that reproduces the training images has ≈0 inside each cluster even if its images differ
  from each other (they differ only *between* clusters). CDC's released script starts from pre-assigned
  cluster folders; the assignment step is done here, as the paper describes it;
* **NN-modes** — how many distinct training images are the nearest neighbour of at least one generated
  image (``k`` = every shot is "used"; MixDL's ``count_modes.py`` picks the *farthest* by mistake, we use
  the nearest). The mean distance to the nearest training image (MixDL's ``nn_lpips``) is reported too:
  ≈0 means memorisation.

All distances come from one embedding per image, ``d(x, y) = ‖e(x) − e(y)‖²`` (see ``features.py``), so a
whole distance matrix is one matrix product.
"""

from __future__ import annotations

import numpy as np
import torch

from .features import FeatureExtractor
from .result import MetricResult, as_embedding, resolve_extractor


def squared_distances(a: torch.Tensor, b: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """``‖a_i − b_j‖²`` for embeddings ``a [Na, P]``, ``b [Nb, P]`` → ``[Na, Nb]`` float64 (clamped at 0)."""
    a, b = a.double(), b.double()
    b_sq = b.pow(2).sum(dim=1)
    rows = []
    for s in range(0, len(a), block):
        a_blk = a[s : s + block]
        rows.append((a_blk.pow(2).sum(dim=1, keepdim=True) + b_sq[None, :] - 2 * a_blk @ b.T).clamp_min(0))
    return torch.cat(rows)


def _upper_pairs_mean_std(dist: torch.Tensor) -> tuple[float, float, int]:
    n = len(dist)
    iu = torch.triu_indices(n, n, offset=1)
    vals = dist[iu[0], iu[1]]
    return float(vals.mean()), float(vals.std()) if len(vals) > 1 else float("nan"), len(vals)


def pairwise_lpips(
    images: torch.Tensor,
    extractor: str | FeatureExtractor = "emoji",
    max_images: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> MetricResult:
    """Mean LPIPS over all pairs ``i < j`` of ``images [N, 3, H, W]`` (higher = more diverse); std over pairs.

    ``max_images`` keeps a seeded random subset first (the number of pairs grows as N²).
    """
    ext = resolve_extractor(extractor, device)
    if max_images is not None and len(images) > max_images:
        images = images[
            torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:max_images]
        ]
    if len(images) < 2:
        raise ValueError(f"pairwise LPIPS needs at least 2 images, got {len(images)}")
    emb = as_embedding(images, ext, "images")
    mean, std, n_pairs = _upper_pairs_mean_std(squared_distances(emb, emb))
    return MetricResult(
        "pairwise_lpips", mean, ext.name, std=std, n_fake=len(emb), details={"pairs": n_pairs}
    )


def assign_to_nearest(
    generated_emb: torch.Tensor, train_emb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each generated embedding ``[N, P]``: index of the nearest training embedding ``[K, P]`` and the distance.

    Returns ``(index [N] long, distance [N] float64)``.
    """
    d = squared_distances(generated_emb, train_emb)
    dist, idx = d.min(dim=1)
    return idx, dist


def intra_cluster_lpips(
    generated: torch.Tensor,
    train: torch.Tensor,
    extractor: str | FeatureExtractor = "emoji",
    max_per_cluster: int = 50,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> MetricResult:
    """CDC's intra-cluster LPIPS of ``generated [N,3,H,W]`` around the ``k`` images ``train [k,3,H,W]``.

    1. assign each generated image to the training image with the lowest LPIPS (the cluster centre);
    2. per cluster, keep at most ``max_per_cluster`` members (seeded random choice; CDC keeps 50) and average
       the LPIPS over all member pairs (the centre itself is not a member);
    3. average over clusters with ≥ 2 members (CDC skips the others as NaN); ``std`` is across clusters.

    Higher is better (more variation around each training image). ``details`` holds the cluster sizes and
    per-cluster values (NaN for skipped clusters).
    """
    ext = resolve_extractor(extractor, device)
    gen_emb = as_embedding(generated, ext, "generated")
    train_emb = as_embedding(train, ext, "train")
    assignment, _ = assign_to_nearest(gen_emb, train_emb)
    g = torch.Generator().manual_seed(seed)
    per_cluster, sizes = [], []
    for c in range(len(train_emb)):
        members = torch.nonzero(assignment == c).flatten()
        sizes.append(len(members))
        if len(members) > max_per_cluster:
            members = members[torch.randperm(len(members), generator=g)[:max_per_cluster]]
        if len(members) < 2:
            per_cluster.append(float("nan"))
            continue
        e = gen_emb[members]
        per_cluster.append(_upper_pairs_mean_std(squared_distances(e, e))[0])
    vals = np.array(per_cluster)
    valid = vals[~np.isnan(vals)]
    if len(valid) == 0:
        value, std = float("nan"), None
    else:
        value, std = float(valid.mean()), float(valid.std(ddof=1)) if len(valid) > 1 else None
    return MetricResult(
        "intra_cluster_lpips",
        value,
        ext.name,
        std=std,
        n_real=len(train_emb),
        n_fake=len(gen_emb),
        details={
            "cluster_sizes": sizes,
            "per_cluster": per_cluster,
            "clusters_used": int(len(valid)),
            "max_per_cluster": max_per_cluster,
        },
    )


def nn_modes(
    generated: torch.Tensor,
    train: torch.Tensor,
    extractor: str | FeatureExtractor = "emoji",
    device: str | torch.device | None = None,
) -> MetricResult:
    """Number of training images that are the LPIPS-nearest neighbour of at least one generated image.

    ``details``: ``counts`` (generated images per training image), ``nn_lpips`` (mean LPIPS from each
    generated image to its nearest training image; ≈0 = copies) and ``fraction`` = modes / k.
    """
    ext = resolve_extractor(extractor, device)
    gen_emb = as_embedding(generated, ext, "generated")
    train_emb = as_embedding(train, ext, "train")
    idx, dist = assign_to_nearest(gen_emb, train_emb)
    counts = torch.bincount(idx, minlength=len(train_emb))
    modes = int((counts > 0).sum())
    return MetricResult(
        "nn_modes",
        modes,
        ext.name,
        n_real=len(train_emb),
        n_fake=len(gen_emb),
        details={
            "counts": counts.tolist(),
            "nn_lpips": float(dist.mean()),
            "fraction": modes / len(train_emb),
        },
    )
