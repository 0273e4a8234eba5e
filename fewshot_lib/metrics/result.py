"""The one result type every metric returns, and the helpers that turn inputs into features.

A number without its extractor is meaningless ("FID 30" through Inception and through the emoji network are
unrelated quantities), so a :class:`MetricResult` always carries ``extractor`` and the sample sizes, and its
string form prints them next to the value: ``FID[emoji] = 12.34 (n_real=500, n_fake=1000)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .features import FeatureExtractor, get_extractor


@dataclass
class MetricResult:
    """``value`` of metric ``metric`` measured through ``extractor`` (``std`` when the metric has a spread)."""

    metric: str
    value: float
    extractor: str
    std: float | None = None
    n_real: int | None = None
    n_fake: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.value)

    def as_dict(self, details: bool = False) -> dict[str, Any]:
        """A JSON-able dict for ``metrics.json`` (``details`` adds per-cluster / per-subset values)."""
        d = asdict(self)
        if not details:
            d.pop("details")
        return d

    def __str__(self) -> str:
        spread = f" ± {self.std:.4g}" if self.std is not None and math.isfinite(self.std) else ""
        sizes = ", ".join(
            f"{k}={v}" for k, v in (("n_real", self.n_real), ("n_fake", self.n_fake)) if v is not None
        )
        return f"{self.metric}[{self.extractor}] = {self.value:.4g}{spread}" + (
            f" ({sizes})" if sizes else ""
        )


@functools.lru_cache(maxsize=8)
def _cached_extractor(name: str, device: str) -> FeatureExtractor:
    return get_extractor(name, device=device)


def resolve_extractor(
    extractor: str | FeatureExtractor = "emoji", device: str | torch.device | None = None
) -> FeatureExtractor:
    """An extractor object from a name (loaded once per name and device, then reused) or as given."""
    if isinstance(extractor, FeatureExtractor):
        return extractor
    if not isinstance(extractor, str):
        raise ValueError(f"extractor must be a name or a FeatureExtractor, got {type(extractor).__name__}")
    return _cached_extractor(extractor, str(torch.device(device or "cpu")))


def as_features(x: torch.Tensor, extractor: FeatureExtractor, what: str) -> torch.Tensor:
    """Images ``[N, 3, H, W]`` → features ``[N, D]`` through ``extractor``; 2-D input is taken as features already.

    Passing precomputed features saves time when one real set is compared with many fakes.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"{what} must be a tensor of images [N, 3, H, W] or features [N, D], got {type(x).__name__}"
        )
    if x.dim() == 2:
        return x.float().cpu()
    if x.dim() == 4:
        return extractor.features(x)
    raise ValueError(f"{what} must be images [N, 3, H, W] or features [N, D], got shape {tuple(x.shape)}")


def as_embedding(x: torch.Tensor, extractor: FeatureExtractor, what: str) -> torch.Tensor:
    """Images → LPIPS distance embeddings ``[N, P]`` (2-D input is taken as embeddings already)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a tensor of images [N, 3, H, W], got {type(x).__name__}")
    if x.dim() == 2:
        return x.float().cpu()
    if x.dim() == 4:
        return extractor.distance_embedding(x)
    raise ValueError(f"{what} must be images [N, 3, H, W] (or embeddings [N, P]), got shape {tuple(x.shape)}")
