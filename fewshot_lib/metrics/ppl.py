"""PPL-uniformity (MixDL, Kong et al., 2022): is the latent space *smooth* between two latents?

A generator that memorised its ``k`` training images tends to map most of the latent space onto them and
to jump abruptly between them: walking from one latent to another, nothing changes for a while, then
everything changes at once. MixDL measures this with perceptual path lengths along the walk:

1. take two latents ``w0, w1`` and the 11 points ``w(t) = lerp(w0, w1, t)`` for ``t = 0, 0.1, …, 1``;
2. for each of the 10 sub-intervals, the LPIPS between consecutive images divided by the step² (0.01),
   as in the perceptual path length of StyleGAN;
3. report, averaged over many paths: the **mean** of the 10 values (how much changes), their **std**
   across the 10 sub-intervals (``uniformity``: low = changes are spread evenly = smooth), and the
   **end-to-end** distance between the two endpoint images (also divided by the step², as MixDL's script
   does; ``details["endpoint_raw"]`` is the plain LPIPS).

The function takes any generator as a callable ``latents [B, ...] → images [B, 3, H, W]`` in ``[-1, 1]``, so
it works with StyleGAN2's ``w`` (pass the synthesis network with fixed noise) or any other latent. Make the
callable deterministic (fixed noise inputs), or the distances include noise changes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..progress import progress
from .features import FeatureExtractor
from .result import MetricResult, resolve_extractor


def lerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Linear interpolation ``a + (b − a)·t`` (MixDL and NVlabs interpolate in W linearly)."""
    return a + (b - a) * t


def ppl_uniformity(
    generator: Callable[[torch.Tensor], torch.Tensor],
    w0: torch.Tensor,
    w1: torch.Tensor,
    extractor: str | FeatureExtractor = "emoji",
    n_steps: int = 10,
    batch_paths: int = 32,
    device: str | torch.device | None = None,
) -> MetricResult:
    """PPL-uniformity over the paths ``w0[i] → w1[i]`` (``w0``, ``w1``: ``[P, ...]`` latents, same shape).

    Returns a :class:`MetricResult` whose ``value`` is the mean scaled step distance, ``std`` the mean over
    paths of the per-path std across steps (the *uniformity*; lower = smoother), and ``details`` with
    ``uniformity``, ``endpoint`` (÷ step², as MixDL), ``endpoint_raw``, ``step`` and per-step means ``[n_steps]``.
    """
    if w0.shape != w1.shape:
        raise ValueError(f"w0 and w1 must have the same shape, got {tuple(w0.shape)} and {tuple(w1.shape)}")
    if n_steps < 2:
        raise ValueError(f"n_steps must be at least 2 (the std needs two sub-intervals), got {n_steps}")
    ext = resolve_extractor(extractor, device)
    step = 1.0 / n_steps
    ts = torch.linspace(0, 1, n_steps + 1)
    step_d, end_d = [], []
    starts = range(0, len(w0), batch_paths)
    with torch.no_grad():
        for s in progress(starts, desc=f"ppl-uniformity [{ext.name}]", disable=len(starts) < 3):
            a, b = w0[s : s + batch_paths], w1[s : s + batch_paths]
            n = len(a)
            # all n_steps+1 points of all paths in one call: [(n_steps+1)·n, ...], ordered point-major
            latents = torch.cat([lerp(a, b, float(t)) for t in ts])
            images = generator(latents)
            if images.dim() != 4 or len(images) != len(latents):
                raise ValueError(
                    f"generator must map [B, ...] latents to [B, 3, H, W] images; got {tuple(images.shape)} "
                    f"for {len(latents)} latents"
                )
            emb = ext.distance_embedding(images.float().cpu(), show_progress=False).double()
            emb = emb.view(n_steps + 1, n, -1)  # [T+1, n, P]
            step_d.append((emb[1:] - emb[:-1]).pow(2).sum(-1).T / step**2)  # [n, T]
            end_d.append((emb[-1] - emb[0]).pow(2).sum(-1))  # [n]
    d = torch.cat(step_d).numpy()
    e = torch.cat(end_d).numpy()
    uniformity = float(d.std(axis=1, ddof=1).mean())
    return MetricResult(
        "ppl_uniformity",
        float(d.mean(axis=1).mean()),
        ext.name,
        std=uniformity,
        n_fake=len(d),
        details={
            "uniformity": uniformity,
            "endpoint": float(e.mean() / step**2),
            "endpoint_raw": float(e.mean()),
            "step": step,
            "n_paths": int(len(d)),
            "per_step_mean": d.mean(axis=0).tolist(),
            "relative_uniformity": float(np.mean(d.std(axis=1, ddof=1) / (d.mean(axis=1) + 1e-12))),
        },
    )
