"""Precision/recall (Kynkäänniemi et al., 2019) and density/coverage (Naeem et al., 2020).

FID mixes two failures into one number: generated images that look wrong (low *fidelity*) and real images
the generator never produces (low *diversity*). These metrics separate them by estimating each data
manifold in feature space as a union of balls: around every sample, a ball whose radius is the distance to
its ``k``-th nearest neighbour within the same set.

* **precision** — the fraction of generated samples inside the *real* manifold (fidelity);
* **recall** — the fraction of real samples inside the *generated* manifold (diversity);
* **density** — how many real balls contain each generated sample, divided by ``k`` and averaged
  (≈1 for matching distributions, >1 when fakes crowd around dense real regions; robust to real outliers);
* **coverage** — the fraction of real samples whose ball contains at least one generated sample
  (diversity measured with real balls only, so fake outliers cannot inflate it).

Inputs: images ``[N, 3, H, W]`` in ``[-1, 1]`` or features ``[N, D]``; Euclidean distances in feature space.
"""

from __future__ import annotations

import torch

from .features import FeatureExtractor
from .result import MetricResult, as_features, resolve_extractor


def _distances(a: torch.Tensor, b: torch.Tensor, block: int = 2048) -> torch.Tensor:
    """Euclidean distances ``[Na, Nb]`` in float64, computed in row blocks to bound memory."""
    a, b = a.double(), b.double()
    return torch.cat([torch.cdist(a[s : s + block], b) for s in range(0, len(a), block)])


def knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point ``[N, D]`` to its ``k``-th nearest *other* point in the same set → ``[N]``."""
    if len(features) <= k:
        raise ValueError(f"need more than k={k} samples to estimate a manifold, got {len(features)}")
    d = _distances(features, features)
    # index 0 of the sorted row is the point itself (distance 0), so the k-th neighbour sits at index k
    return d.sort(dim=1).values[:, k]


def in_manifold(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """``[N_points, N_centres]`` bool: point inside the ball around centre."""
    return _distances(points, centres) <= radii[None, :]


def precision_recall(
    real: torch.Tensor,
    fake: torch.Tensor,
    extractor: str | FeatureExtractor = "emoji",
    k: int = 3,
    device: str | torch.device | None = None,
) -> dict[str, MetricResult]:
    """``{"precision": .., "recall": ..}`` (each a :class:`MetricResult` in ``[0, 1]``, higher is better)."""
    ext = resolve_extractor(extractor, device)
    fr, ff = as_features(real, ext, "real"), as_features(fake, ext, "fake")
    precision = in_manifold(ff, fr, knn_radii(fr, k)).any(dim=1).double().mean()
    recall = in_manifold(fr, ff, knn_radii(ff, k)).any(dim=1).double().mean()
    common = dict(extractor=ext.name, n_real=len(fr), n_fake=len(ff), details={"k": k})
    return {
        "precision": MetricResult("precision", float(precision), **common),
        "recall": MetricResult("recall", float(recall), **common),
    }


def density_coverage(
    real: torch.Tensor,
    fake: torch.Tensor,
    extractor: str | FeatureExtractor = "emoji",
    k: int = 5,
    device: str | torch.device | None = None,
) -> dict[str, MetricResult]:
    """``{"density": .., "coverage": ..}`` (Naeem et al.; density is unbounded above, coverage in [0, 1])."""
    ext = resolve_extractor(extractor, device)
    fr, ff = as_features(real, ext, "real"), as_features(fake, ext, "fake")
    inside = in_manifold(ff, fr, knn_radii(fr, k))  # [N_fake, N_real]
    density = inside.double().sum(dim=1).mean() / k
    coverage = inside.any(dim=0).double().mean()
    common = dict(extractor=ext.name, n_real=len(fr), n_fake=len(ff), details={"k": k})
    return {
        "density": MetricResult("density", float(density), **common),
        "coverage": MetricResult("coverage", float(coverage), **common),
    }
