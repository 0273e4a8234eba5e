"""Target-style share: has an adapted generator really changed style?

CDC and its baselines adapt a Noto source model to a few shots of another drawing style. FID against the
target set mixes "right style" with "right objects"; the emoji network's **style head** answers the first part
alone: the share of samples it assigns to the target style. Floor: the unadapted source (≈ 0.02 for
noto → fluent_3d); ceiling: real images of the target style (≈ 0.98). Measured with ``emoji-features-v1``, not
comparable with any paper number.
"""

from __future__ import annotations

import torch

from .features import EmojiFeatures, FeatureExtractor
from .result import MetricResult, resolve_extractor

__all__ = ["style_share"]


@torch.no_grad()
def style_share(
    images: torch.Tensor,
    style: str,
    extractor: str | FeatureExtractor = "emoji",
    device: str | torch.device | None = None,
    batch: int = 256,
) -> MetricResult:
    """Share of ``images [N, 3, H, W]`` (in ``[-1, 1]``) whose top style is ``style``; ``details`` holds the
    share of every style."""
    ext = resolve_extractor(extractor, device)
    styles = list(ext.meta.get("styles") or []) if isinstance(ext, EmojiFeatures) else []
    if not styles or ext.net.style_head is None:
        raise ValueError(f"style share needs the emoji network's style head; {ext.name!r} has none")
    if style not in styles:
        raise ValueError(f"unknown style {style!r}; the emoji network knows {styles}")
    tops = []
    for s in range(0, len(images), batch):
        x = ext._prepare(images[s : s + batch].to(ext.device).float())
        tops.append(ext.net(x)["style"].argmax(1).cpu())
    top = torch.cat(tops)
    shares = {name: float((top == i).float().mean()) for i, name in enumerate(styles)}
    return MetricResult(
        "style_share", shares[style], ext.name, n_fake=len(images), details={"style": style, "shares": shares}
    )
