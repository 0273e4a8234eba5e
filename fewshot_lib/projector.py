"""GAN inversion: find the latent (W or W+) from which a trained generator reproduces a given image.

**W vs W+.** ``W`` inversion optimises one ``w`` ``[D]`` per image, used by every layer: it stays on the
generator's learned manifold, so the result is editable but may not match exactly. ``W+`` optimises one
``w`` per layer ``[L, D]``: far more expressive (closer reconstructions), but it can leave the region G was
trained on. CDC and LSO use inversions to place real few-shot images in a generator's latent space.

**Recipe** (as in StyleGAN2's projector, §5 of the paper): start from the mean ``w``; Adam with a short
learning-rate ramp-up and a cosine ramp-down; add decaying Gaussian noise to ``w`` early on so the
optimisation explores instead of locking into the nearest basin; optionally optimise the per-layer noise maps
too, with a penalty on their spatial autocorrelation so that they do not secretly encode the image.
The loss is pixel MSE plus an optional perceptual term from any callable ``feature_loss(x, y) -> [N]``
(e.g. LPIPS, or distances in the project's emoji feature net).

Shapes: ``target`` ``[N, 3, H, W]`` in ``[-1, 1]`` → latents ``[N, D]`` (W) or ``[N, L, D]`` (W+).
Taught in: ``notebooks/02_stylegan2_training.ipynb``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .models.helpers import frozen
from .progress import progress


@dataclass
class ProjectionResult:
    """``latents``: ``[N, D]`` (W) or ``[N, L, D]`` (W+); ``images``: the reconstructions ``[N, 3, H, W]``."""

    latents: torch.Tensor
    images: torch.Tensor
    w_plus: bool
    noise: list[torch.Tensor] | None = None
    losses: list[float] = field(default_factory=list)
    pixel_mse: torch.Tensor | None = None  # [N] final per-image MSE


def noise_regularisation(noises: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squared horizontal/vertical autocorrelations of each noise map, over an image pyramid.

    White noise has zero autocorrelation at every scale; a map that encodes image structure does not.
    """
    loss = torch.zeros(())
    for n in noises:
        n = n.float()
        loss = loss.to(n.device)
        while True:
            loss = (
                loss
                + (n * torch.roll(n, 1, dims=3)).mean().pow(2)
                + (n * torch.roll(n, 1, dims=2)).mean().pow(2)
            )
            if n.shape[-1] <= 8:
                break
            n = F.avg_pool2d(n, 2) * 2  # halve the size, keep unit variance
    return loss


def _lr_schedule(t: float, lr: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    ramp = min(1.0, (1 - t) / rampdown) * min(1.0, t / rampup)
    return lr * 0.5 * (1 - math.cos(ramp * math.pi))


def project(
    G: torch.nn.Module,
    target: torch.Tensor,
    steps: int = 300,
    w_plus: bool = False,
    lr: float = 0.1,
    pixel_weight: float = 1.0,
    feature_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    feature_weight: float = 1.0,
    optimize_noise: bool = False,
    noise_weight: float = 1e5,
    init_noise_scale: float = 0.05,
    n_mean: int = 4096,
    seed: int = 0,
    show_progress: bool = False,
) -> ProjectionResult:
    """Invert ``target`` images into G's W (or W+) space; see module docstring for the recipe."""
    if target.ndim != 4 or target.shape[1] != 3 or target.shape[-1] != G.size:
        raise ValueError(f"target must be [N, 3, {G.size}, {G.size}] in [-1, 1], got {list(target.shape)}.")
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1.")
    dev = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    target = target.to(dev)
    n = target.shape[0]
    with torch.no_grad():
        # The start: the mean w — over every class of a conditional G (LSO inverts images of a class it has
        # not seen yet, so no class is privileged).
        c = torch.randint(0, G.c_dim, (n_mean,), generator=gen).to(dev) if getattr(G, "c_dim", 0) else None
        w_samples = G.mapping(torch.randn(n_mean, G.style_dim, generator=gen).to(dev), c)  # [n_mean, D]
        w_avg = w_samples.mean(0)
        w_std = ((w_samples - w_avg).pow(2).sum(1).mean()).sqrt().item()

    start = w_avg.view(1, 1, -1).repeat(n, G.n_latent, 1) if w_plus else w_avg.view(1, -1).repeat(n, 1)
    latent = start.clone().requires_grad_(True)
    noises = [torch.randn(n, 1, *m.shape[2:], generator=gen).to(dev) for m in G.noises.as_list()]
    for m in noises:
        m.requires_grad_(optimize_noise)
    params = [latent] + (noises if optimize_noise else [])
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    losses: list[float] = []
    with frozen(G):  # only the latent (and noise) learn; G's weights stay as they are
        for i in progress(range(steps), desc="project", disable=not show_progress):
            t = i / steps
            for group in opt.param_groups:
                group["lr"] = _lr_schedule(t, lr)
            jitter = init_noise_scale * w_std * max(0.0, 1 - t / 0.75) ** 2
            w_in = latent + torch.randn(latent.shape, generator=gen).to(dev) * jitter
            img, _ = G(w_in, input_is_latent=True, noise=noises)
            per_image = pixel_weight * (img - target).pow(2).flatten(1).mean(1)  # [N]
            if feature_loss is not None:
                per_image = per_image + feature_weight * feature_loss(img, target).view(n)
            loss = per_image.sum()
            if optimize_noise:
                loss = loss + noise_weight * noise_regularisation(noises)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if optimize_noise:
                with torch.no_grad():  # keep the noise maps white and unit-variance
                    for m in noises:
                        m.sub_(m.mean((1, 2, 3), keepdim=True)).div_(m.std((1, 2, 3), keepdim=True) + 1e-8)
            losses.append(loss.item() / n)
    with torch.no_grad():
        final, _ = G(latent, input_is_latent=True, noise=noises)
        mse = (final - target).pow(2).flatten(1).mean(1)
    return ProjectionResult(
        latents=latent.detach(),
        images=final.detach().cpu(),
        w_plus=w_plus,
        noise=[m.detach() for m in noises],
        losses=losses,
        pixel_mse=mse.cpu(),
    )
