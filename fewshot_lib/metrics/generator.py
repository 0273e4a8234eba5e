"""Metrics of one unconditional generator: seeded samples against a reference set, latent walks, memorisation.

These take a trained StyleGAN2-like generator (``generator(z, randomize_noise=False)``, ``generator.mapping``,
``generator.style_dim``) rather than images, because a walk in W and a seeded set of samples need the model.
Every number goes through a feature extractor (default ``"emoji"``) and names it.

* :func:`evaluate_generator`: FID / diversity / NN-modes / PPL-uniformity / recognisability of seeded samples
  (the per-seed numbers of notebook 05);
* :func:`interpolation_walk`, :func:`walk_step_shares`: one walk's images and step distances, and how a walk's
  change is shared out over its steps ("staircase or ramp");
* :func:`memorisation_metrics`: how much a generator copies its training shots (the long-trained MixDL
  showcase, ``scripts/train_mixdl_showcase.py``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .diversity import pairwise_lpips, squared_distances
from .ppl import ppl_uniformity
from .protocols import evaluate_against_set
from .recognisability import can_recognise, recognisability
from .result import resolve_extractor

__all__ = [
    "shot_copy_metrics",
    "fixed_noise_synthesis",
    "evaluate_generator",
    "interpolation_walk",
    "walk_step_shares",
    "memorisation_metrics",
]


def fixed_noise_synthesis(generator: nn.Module):
    """A deterministic ``w [B, w_dim] → images [B, 3, H, W]`` (fixed noise buffers), for latent walks and PPL."""

    def synth(w: torch.Tensor) -> torch.Tensor:
        dev = next(generator.parameters()).device
        with torch.no_grad():
            return generator(w.to(dev), input_is_latent=True, randomize_noise=False)[0].cpu()

    return synth


@torch.no_grad()
def evaluate_generator(
    generator: nn.Module,
    shots: torch.Tensor,
    reference: torch.Tensor,
    n_fake: int = 500,
    n_paths: int = 64,
    seed: int = 0,
    extractor: str = "emoji",
) -> dict[str, float]:
    """The notebook's numbers for one trained generator (all through ``extractor``).

    * ``fid``: FID of ``n_fake`` samples against the ``reference`` set (the category's images minus the shots);
    * ``lpips_diversity``: mean pairwise LPIPS of the samples;
    * ``nn_modes`` / ``nn_lpips``: how many shots are someone's nearest neighbour, mean distance to it;
    * ``ppl_mean`` / ``ppl_std`` / ``ppl_end``: PPL-uniformity over ``n_paths`` 10-step walks in W (mean step
      distance ÷ step², its std across the 10 steps, endpoint distance ÷ step²); ``ppl_rel_std``: the std
      divided by the mean, per walk — uniformity that does not grow with how much the walk changes overall.

    Latents are seeded (``seed``); the noise inputs are the generator's fixed buffers.
    """
    gen = torch.Generator().manual_seed(seed)
    dev = next(generator.parameters()).device
    z = torch.randn(n_fake, generator.style_dim, generator=gen)
    fake = torch.cat([generator(zb.to(dev), randomize_noise=False)[0].cpu() for zb in z.split(250)])
    res = evaluate_against_set(
        fake,
        reference,
        train=shots,
        extractor=extractor,
        metrics=("fid", "pairwise_lpips", "nn_modes"),
        seed=seed,
    )
    w0 = generator.mapping(torch.randn(n_paths, generator.style_dim, generator=gen).to(dev))
    w1 = generator.mapping(torch.randn(n_paths, generator.style_dim, generator=gen).to(dev))
    ppl = ppl_uniformity(fixed_noise_synthesis(generator), w0, w1, extractor=extractor)
    ext = resolve_extractor(extractor)
    rec = (
        recognisability(reference, fake, extractor=ext).value if can_recognise(ext) else float("nan")
    )  # floor
    return {
        "fid": res["fid"].value,
        "recognisability": rec,
        "lpips_diversity": res["pairwise_lpips"].value,
        "nn_modes": float(res["nn_modes"].value),
        "nn_lpips": res["nn_modes"].details["nn_lpips"],
        "ppl_mean": ppl.value,
        "ppl_std": ppl.details["uniformity"],
        "ppl_end": ppl.details["endpoint"],
        "ppl_rel_std": ppl.details["relative_uniformity"],
        "n_fake": n_fake,
        "n_reference": len(reference),
        "n_paths": n_paths,
        "extractor": res["fid"].extractor,
    }


@torch.no_grad()
def interpolation_walk(
    generator: nn.Module, w0: torch.Tensor, w1: torch.Tensor, n_steps: int = 10, extractor: str = "emoji"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images along ``lerp(w0, w1, t)``, ``t = 0, 1/n, …, 1`` and the LPIPS of each step.

    ``w0, w1 [w_dim]`` → ``(images [n_steps + 1, 3, H, W], step_lpips [n_steps])``. A smooth generator changes
    a little at every step; an over-fitted one changes almost nothing, then jumps (a "staircase").
    """
    ts = torch.linspace(0, 1, n_steps + 1, device=w0.device)[:, None]
    images = fixed_noise_synthesis(generator)(w0[None] + (w1 - w0)[None] * ts)
    emb = resolve_extractor(extractor).distance_embedding(images, show_progress=False)
    return images, (emb[1:] - emb[:-1]).pow(2).sum(1)


def _nearest_other_shot_distance(shot_emb: torch.Tensor, bank_emb: torch.Tensor) -> torch.Tensor:
    """For each shot ``[k, P]``: distance to the nearest *other* shot in ``bank = [shots; mirrored shots]``."""
    k = len(shot_emb)
    d = squared_distances(shot_emb, bank_emb)  # [k, 2k]
    own = torch.arange(k)
    d[own, own] = float("inf")  # itself
    d[own, own + k] = float("inf")  # its own mirror image
    return d.min(1).values  # [k]


@torch.no_grad()
def walk_step_shares(
    generator: nn.Module, w0: torch.Tensor, w1: torch.Tensor, n_steps: int = 10, extractor: str = "emoji"
) -> torch.Tensor:
    """Per walk, the share of the walk's total change made by each of its ``n_steps`` steps.

    ``w0, w1 [P, w_dim]`` → ``[P, n_steps]`` (rows sum to 1). A ramp gives ≈ ``1/n_steps`` everywhere; a staircase
    puts most of a row into one or two steps. Distances are the extractor's LPIPS-style squared distances.
    """
    rows = []
    for a, b in zip(w0, w1):
        _, d = interpolation_walk(generator, a, b, n_steps, extractor)  # [n_steps]
        rows.append(d / d.sum().clamp_min(1e-12))
    return torch.stack(rows)


@torch.no_grad()
def shot_copy_metrics(
    fake: torch.Tensor,
    shots: torch.Tensor,
    extractor="emoji",
    copy_ratio: float = 0.25,
    pixel_copy_rmse: float = 0.1,
    fake_embeddings: torch.Tensor | None = None,
) -> dict[str, Any]:
    """How close samples ``fake [n, 3, H, W]`` are to the training ``shots [k, 3, H, W]`` *and their mirror images*
    (training uses x-flips, so a flipped copy is a copy); the copy part of :func:`memorisation_metrics`, for samples
    that are already drawn. Distances are the ``extractor``'s LPIPS-style squared distances on the scale
    ``shot_gap`` (the median over shots of the distance to the nearest *other* shot).

    Returns ``copy_fraction`` (share closer than ``copy_ratio · shot_gap``), ``nn_ratio_median``,
    ``pixel_copy_fraction`` / ``pixel_rmse_median`` (RMSE in ``[-1, 1]`` units, threshold ``pixel_copy_rmse``),
    ``nn_modes`` (how many shots are some sample's nearest neighbour), ``shot_gap`` and the samples'
    ``fake_embeddings [n, P]`` (pass them in when the caller has them already, to skip the network).
    """
    k = len(shots)
    ext = resolve_extractor(extractor)
    bank = torch.cat([shots, shots.flip(3)]).float()  # [2k, 3, H, W]
    e_fake = (
        fake_embeddings if fake_embeddings is not None else ext.distance_embedding(fake, show_progress=False)
    )
    e_bank = ext.distance_embedding(bank, show_progress=False)  # [2k, P]
    nn_d, nn_i = squared_distances(e_fake, e_bank).min(1)  # [n] over the 2k shots and mirrors
    shot_gap = float(_nearest_other_shot_distance(e_bank[:k], e_bank).median())
    ratio = nn_d / shot_gap
    pix = (fake.flatten(1)[:, None, :] - bank.flatten(1)[None]).pow(2).mean(-1).sqrt().min(1).values  # [n]
    return {
        "copy_fraction": float((ratio < copy_ratio).float().mean()),
        "nn_ratio_median": float(ratio.median()),
        "pixel_copy_fraction": float((pix < pixel_copy_rmse).float().mean()),
        "pixel_rmse_median": float(pix.median()),
        "nn_modes": float(len((nn_i % k).unique())),
        "shot_gap": shot_gap,
        "fake_embeddings": e_fake,
    }


@torch.no_grad()
def memorisation_metrics(
    generator: nn.Module,
    shots: torch.Tensor,
    n_samples: int = 256,
    n_paths: int = 32,
    seed: int = 0,
    extractor: str = "emoji",
    copy_ratio: float = 0.25,
    pixel_copy_rmse: float = 0.1,
) -> dict[str, float]:
    """How much a generator trained on ``shots [k, 3, H, W]`` *copies* them, and how stairlike its walks are.

    Samples ``n_samples`` images (seeded latents, fixed noise) and compares each with the shots *and their mirror
    images* (training uses x-flips, so a flipped copy is a copy). All distances are the ``extractor``'s
    LPIPS-style squared distances, put on the scale of the data by ``shot_gap`` — the median over shots of the
    distance to the nearest *other* shot.

    * ``copy_fraction``: share of samples closer to a shot than ``copy_ratio · shot_gap`` (fixed in advance:
      a quarter of the gap between two different training images);
    * ``nn_ratio_median``: median of (distance to the nearest shot ÷ ``shot_gap``) — threshold-free, ≈ 0 for copies;
    * ``pixel_copy_fraction`` / ``pixel_rmse_median``: the same in pixels (RMSE in ``[-1, 1]`` units, threshold
      ``pixel_copy_rmse``), independent of any network;
    * ``nn_modes``: how many shots are some sample's nearest neighbour (mirrors count for their shot);
    * ``lpips_diversity``: mean pairwise distance of the first 128 samples;
    * ``ppl_mean`` / ``ppl_std`` / ``ppl_rel_std`` / ``ppl_end``: PPL-uniformity over ``n_paths`` 10-step walks in W
      (as :func:`evaluate_generator`), and ``max_step_share``: the mean over walks of the largest step's share of
      the walk (0.1 for a perfect ramp, → 1 for a single jump).
    """
    ext = resolve_extractor(extractor)
    gen = torch.Generator().manual_seed(seed)
    dev = next(generator.parameters()).device
    z = torch.randn(n_samples, generator.style_dim, generator=gen)
    fake = torch.cat([generator(zb.to(dev), randomize_noise=False)[0].cpu() for zb in z.split(256)])
    copies = shot_copy_metrics(fake, shots, ext, copy_ratio, pixel_copy_rmse)
    w0 = generator.mapping(torch.randn(n_paths, generator.style_dim, generator=gen).to(dev))
    w1 = generator.mapping(torch.randn(n_paths, generator.style_dim, generator=gen).to(dev))
    ppl = ppl_uniformity(fixed_noise_synthesis(generator), w0, w1, extractor=ext)
    shares = walk_step_shares(generator, w0, w1, extractor=ext)  # [n_paths, 10]
    return {
        **{key: v for key, v in copies.items() if key != "fake_embeddings"},
        "lpips_diversity": pairwise_lpips(copies["fake_embeddings"][:128], ext).value,
        "ppl_mean": ppl.value,
        "ppl_std": ppl.details["uniformity"],
        "ppl_rel_std": ppl.details["relative_uniformity"],
        "ppl_end": ppl.details["endpoint"],
        "max_step_share": float(shares.max(1).values.mean()),
        "n_samples": n_samples,
        "n_paths": n_paths,
        "copy_ratio": copy_ratio,
        "pixel_copy_rmse": pixel_copy_rmse,
        "extractor": ext.name,
    }
