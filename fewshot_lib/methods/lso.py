"""LSO — "Where is My Spot? Few-shot Image Generation via Latent Subspace Optimization" (Zheng et al., CVPR 2023).

**Idea.** A class-conditional StyleGAN2 trained on *seen* classes has, for every class ``c``, a region of W
around the class **centroid** ``w_c = MLP([0, ê(c)])`` (:mod:`fewshot_lib.models.conditional`). Given ``k``
images of a new class, LSO adds one class column to the embedding table and finds *its spot*: where in W the
new class should live and which subspace around it produces members of the class. Two stages, as the reference
code (chansey0529/LSO) runs them, every task (class × k shots) starting afresh from the seen-class model:

1. **LAL** (anchor localisation; the mapping side only). One *anchor* latent per shot, starting at zero — i.e.
   at the new centroid — and a magnitude parameter ``m`` used as ``σ(m)``. The loss pulls the anchors' mapped
   latents onto the shots' inversions ``w_inv`` (MSE), keeps ``σ(m)`` small (``σ(m)²``, toward the centroid),
   and keeps the seen classes' W unchanged against a frozen teacher mapping (MSE on 4 seen samples). Trained:
   embedding table, mapping MLP, anchors, ``m``.
2. **LSR** (subspace refinement; the synthesis network and D). The anchors' images must reproduce the shots
   (pixel MSE + perceptual + feature terms); samples from the *whole* new-class subspace (magnitude 1) must fool
   D, which sees the shots as the new class's reals (non-saturating loss, lazy R1, adaptive augmentation); the
   seen classes' images (G) and D's features on them (joint min–max normalised) are distilled from frozen
   teachers. Trained: everything, with the mapping side at 1/100 of the synthesis rate and ``m`` at 100×.

**Sampling.** ``w = G_ema.mapping(z, c_new, magnitude=s)`` with a hand-set ``s`` (the reference: 0.6–1.0 per
dataset and k) — chosen here on validation classes disjoint from the ones the claims are measured on.

**Baselines of notebook 07.** :func:`inversion_only_samples` — the unchanged seen-class model at random convex
combinations of the shots' inverted codes (no training); :class:`InversionFinetuneTask` — *inversion + plain
fine-tune*: LSR's synthesis/D fine-tune on the shots around those codes, without LAL (no anchors, magnitude or new
class in the mapping) and without seen-class preservation; the ablation that shows what LSO's two ideas add.

**Judge and training never share a network.** The perceptual and feature terms use a feature network trained
without the unseen classes (``emoji-features-seen-v1``, run D of ``scripts/train_feature_net.py``); the metrics
use ``emoji-features-v1``.

Deviations from the reference, each deliberate: teachers are frozen with ``requires_grad_(False)`` (the
reference sets a plain attribute, a no-op); the class-embedding gain stays fixed when a class is added (seen
classes stay bit-identical); the AlexNet LPIPS and MoCo/ArcFace feature losses (ImageNet/face weights) are
replaced by the offline emoji network's layer distances and embedding cosine.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..augment import AdaptiveAugment, diff_augment
from ..checkpoint import file_sha256
from ..config import data_dir
from ..models.helpers import accumulate, frozen
from ..progress import progress
from ..stylegan2_losses import r1_penalty

log = logging.getLogger(__name__)

__all__ = [
    "LSOConfig",
    "Anchors",
    "TrainingFeatures",
    "extend_with_new_class",
    "lal_loss",
    "minmax_joint",
    "LSOTask",
    "InversionFinetuneTask",
    "mapping_parameters",
    "synthesis_parameters",
    "check_task_inputs",
    "convex_codes",
    "inversion_only_samples",
    "draw_shots",
    "shipped_task_samples",
    "read_task_samples",
]


def _lazy_r1(D: nn.Module, reals: torch.Tensor, labels: torch.Tensor, aug, c) -> torch.Tensor:
    """Lazy R1 on the augmented reals (γ/2 · E‖∇D‖², scaled by the interval it is applied at)."""
    x = reals.detach().requires_grad_(True)
    return c.r1_gamma / 2 * r1_penalty(D(aug(x), labels), x) * c.r1_every


@dataclass
class LSOConfig:
    """Defaults are the reference's (flowers, k > 1); shrink the step counts for CPU runs."""

    lal_steps: int = 125  # 2 kimg at batch 16
    lal_lr: float = 0.05  # × 0.8 (lazy-regularisation ratio of G, interval 4) in the optimiser
    lal_magnitude_lr_mult: float = 25.0
    lsr_steps: int = 375  # 6 kimg at batch 16
    lsr_lr: float = 0.0025
    lsr_mapping_lr_mult: float = 0.01  # mapping MLP, embedding and anchors during LSR
    lsr_magnitude_lr_mult: float = 100.0
    d_mapping_lr_mult: float = 0.01  # D's class projection during LSR
    batch: int = 16  # fakes per adversarial step (D reals: the k shots repeated)
    seen_batch: int = 4  # seen-class samples for the preservation terms
    w_magnitude: float = 1.0
    w_appearance: float = 1.0  # LAL: anchors' w vs the shots' inversions
    w_seen_g: float = 1.0
    w_seen_d: float = 2.0
    w_perceptual: float = 1.0  # LSR: anchor reconstruction, as a whole
    perc_l2: float = 0.5
    perc_lpips: float = 1.0
    perc_feature: float = 0.5
    w_adv: float = 1.0
    r1_gamma: float = 0.0256  # 2e-4 · R² / 32 at R = 64; 0.0064 at 32 px
    r1_every: int = 16
    ada_target: float = 0.6
    ada_speed_images: int = 10_000  # ada_kimg = 10
    ema_half_life_images: float = 10_000.0
    ema_rampup: float = 0.05
    sample_magnitude: float = 0.7  # flowers, k > 1

    def as_dict(self) -> dict:
        return asdict(self)


class Anchors(nn.Module):
    """One latent per shot (``[k, z_dim]``, zeros: the centroid) and the magnitude parameter ``m`` (σ(m) ≈ 0.73)."""

    def __init__(self, k: int, z_dim: int):
        super().__init__()
        if k < 1:
            raise ValueError(f"LSO needs k ≥ 1 shots, got {k}")
        self.z = nn.Parameter(torch.zeros(k, z_dim))
        self.m = nn.Parameter(torch.ones(()))

    @property
    def sigma(self) -> torch.Tensor:
        return torch.sigmoid(self.m)


def mapping_parameters(G: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(embedding table, mapping MLP)`` parameters of a conditional generator."""
    embed = list(G.class_embed.parameters())
    ids = {id(p) for p in embed}
    mlp = [p for p in G.style.parameters() if id(p) not in ids]
    return embed, mlp


def synthesis_parameters(G: nn.Module) -> list[nn.Parameter]:
    embed, mlp = mapping_parameters(G)
    ids = {id(p) for p in embed + mlp}
    return [p for p in G.parameters() if id(p) not in ids]


def extend_with_new_class(G: nn.Module, D: nn.Module | None = None, seed: int = 0) -> int:
    """Append one class to ``G`` (and ``D``) in place, each a column drawn from N(0, 1); returns its index."""
    if not getattr(G, "c_dim", 0):
        raise ValueError(
            "LSO needs a class-conditional generator (Generator(c_dim=n_seen)); this one is "
            "unconditional — train one with scripts/train_conditional_source.py"
        )
    new = G.add_class(torch.Generator().manual_seed(seed))
    if D is not None:
        if D.add_class(torch.Generator().manual_seed(seed + 1)) != new:
            raise ValueError("G and D disagree on the number of classes")
    return new


def check_task_inputs(G: nn.Module, shots: torch.Tensor, w_inv: torch.Tensor) -> None:
    """Clear errors for a task's inputs: ``shots [k ≥ 1, 3, S, S]`` at G's size, one inversion per shot."""
    if shots.dim() != 4 or shots.shape[1] != 3 or len(shots) == 0:
        raise ValueError(f"shots must be images [k, 3, S, S] with k ≥ 1, got {tuple(shots.shape)}")
    if shots.shape[-1] != G.size or shots.shape[-2] != G.size:
        raise ValueError(f"shots are {shots.shape[-2]}×{shots.shape[-1]} px; the generator makes {G.size} px")
    if len(w_inv) != len(shots):
        raise ValueError(f"{len(w_inv)} inversions for {len(shots)} shots")


def convex_codes(w_inv: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random convex combinations of the ``k`` inverted codes ``[k, L, D]`` (or ``[k, D]``), weights drawn from
    Dirichlet(1) with ``gen`` (normalised exponentials, so the draw is reproducible) → ``[n, L, D]``."""
    e = -torch.rand(n, len(w_inv), generator=gen).clamp_min(1e-12).log()  # Exp(1)  [n, k]
    alpha = (e / e.sum(1, keepdim=True)).to(w_inv.device)
    return torch.einsum("nk,k...->n...", alpha, w_inv)


def draw_shots(pool: torch.Tensor, k: int, seed: int, index: int) -> tuple[torch.Tensor, list[int]]:
    """Task ``index`` of run ``seed``: ``k`` shots drawn without replacement from a class's conditioning ``pool``
    ``[n, 3, S, S]`` → ``(shots [k, 3, S, S], their indices)`` (the draw of ``scripts/run_lso_tasks.py``)."""
    if not 1 <= k <= len(pool):
        raise ValueError(f"k must be in 1..{len(pool)} (the pool's size), got {k}")
    idx = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed * 1000 + index))[:k]
    return pool[idx], idx.tolist()


@torch.no_grad()
def inversion_only_samples(
    G: nn.Module, w_inv: torch.Tensor, n: int, seed: int = 0, batch: int = 64
) -> torch.Tensor:
    """The *inversion only* baseline: ``n`` images of the unchanged generator at random convex combinations of the
    shots' inverted codes, with fresh noise → ``[n, 3, S, S]`` (no training at all)."""
    gen = torch.Generator().manual_seed(seed)
    dev = next(G.parameters()).device
    out = []
    for i in range(0, n, batch):
        m = min(batch, n - i)
        w = convex_codes(w_inv.to(dev), m, gen)
        noise = [torch.randn(m, 1, *b.shape[2:], generator=gen).to(dev) for b in G.noises.as_list()]
        out.append(G(w, input_is_latent=True, noise=noise)[0].cpu())
    return torch.cat(out) if out else torch.zeros(0, 3, G.size, G.size)


class TrainingFeatures(nn.Module):
    """Differentiable perceptual and feature losses from a frozen emoji feature network (not the judge's).

    ``perceptual(x, y)``: LPIPS-style — unit-normalised activations of the four stages, squared differences
    averaged per stage and summed; ``feature(x, y)``: ``1 − cos`` of the 256-d embeddings. Both ``[N] → mean``.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = copy.deepcopy(net).eval().requires_grad_(False)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return (
            x
            if x.shape[-1] == 32
            else F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        )

    def perceptual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self.net.layers(self._prep(x)), self.net.layers(self._prep(y))
        dist = sum(
            (
                (a / (a.norm(dim=1, keepdim=True) + 1e-10) - b / (b.norm(dim=1, keepdim=True) + 1e-10))
                .pow(2)
                .sum(1)
                .mean((1, 2))
            )
            for a, b in zip(fx, fy)
        )
        return dist.mean()

    def feature(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ex, ey = self.net.embed(self._prep(x)), self.net.embed(self._prep(y))
        return (1 - F.cosine_similarity(ex, ey, dim=1)).mean()

    def reconstruction(self, x: torch.Tensor, y: torch.Tensor, cfg: LSOConfig) -> torch.Tensor:
        """``perc_l2·MSE + perc_lpips·perceptual + perc_feature·feature`` (the reference's weights)."""
        return (
            cfg.perc_l2 * F.mse_loss(x, y)
            + cfg.perc_lpips * self.perceptual(x, y)
            + cfg.perc_feature * self.feature(x, y)
        )


def lal_loss(
    G: nn.Module,
    teacher: nn.Module,
    anchors: Anchors,
    w_inv: torch.Tensor,
    c_new: int,
    n_seen: int,
    cfg: LSOConfig,
    gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Stage 1: ``σ(m)² + MSE(w_inv, mapping(anchors, c_new, σ(m))) + MSE(teacher W, W)`` on seen classes.

    ``w_inv``: the shots' inversions ``[k, L, D]`` (W+) or ``[k, D]``; a single mapped ``w`` per anchor is fitted
    to every layer of a W+ target (as the reference does).
    """
    dev = anchors.z.device
    k = len(anchors.z)
    sigma = anchors.sigma
    w_a = G.mapping(
        anchors.z, torch.full((k,), c_new, dtype=torch.long, device=dev), magnitude=sigma
    )  # [k, D]
    target = w_inv.to(dev)
    appearance = F.mse_loss(w_a[:, None].expand_as(target) if target.dim() == 3 else w_a, target)
    z_s = torch.randn(cfg.seen_batch, G.style_dim, generator=gen).to(dev)
    c_s = torch.randint(0, n_seen, (cfg.seen_batch,), generator=gen).to(dev)
    with torch.no_grad():
        w_t = teacher.mapping(z_s, c_s)
    seen = F.mse_loss(G.mapping(z_s, c_s), w_t)
    total = cfg.w_magnitude * sigma.square() + cfg.w_appearance * appearance + cfg.w_seen_g * seen
    return {
        "loss": total,
        "sigma": sigma.detach(),
        "appearance": appearance.detach(),
        "seen_w": seen.detach(),
    }


def minmax_joint(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale two feature tensors together to ``[-1, 1]`` by their joint min and max (the reference's ``mm``)."""
    lo = torch.minimum(a.min(), b.min())
    hi = torch.maximum(a.max(), b.max())
    scale = (hi - lo).clamp_min(1e-8)
    return (a - lo) / scale * 2 - 1, (b - lo) / scale * 2 - 1


@dataclass
class _History:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, **kw: torch.Tensor | float) -> None:
        for key, v in kw.items():
            self.values.setdefault(key, []).append(float(v))


class LSOTask:
    """One LSO task: inject the class shown by ``shots [k, 3, S, S]`` (with inversions ``w_inv``) into copies of
    the seen-class models ``G`` (EMA generator) and ``D``; the originals are never modified.

    ``run(stage)`` trains stage ``"lal"`` or ``"lsr"`` to its step count (resumable: ``state_dict`` /
    ``load_state_dict`` hold models, optimisers, teachers, RNG and the step of each stage); :meth:`sample`
    draws new images of the injected class.
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        shots: torch.Tensor,
        w_inv: torch.Tensor,
        features: TrainingFeatures,
        cfg: LSOConfig | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        self.cfg = cfg or LSOConfig()
        self.device = torch.device(device)
        check_task_inputs(G, shots, w_inv)
        self.n_seen = int(G.c_dim) if getattr(G, "c_dim", 0) else 0
        self.G = copy.deepcopy(G).to(self.device).train()
        self.D = copy.deepcopy(D).to(self.device).train()
        self.c_new = extend_with_new_class(self.G, self.D, seed=seed)
        self.shots = shots.to(self.device).float()
        self.w_inv = w_inv.to(self.device).float()
        self.features = features.to(self.device)
        self.anchors = Anchors(len(shots), G.style_dim).to(self.device)
        self.gen = torch.Generator().manual_seed(seed)
        self.step = {"lal": 0, "lsr": 0}
        self.history = _History()
        self.ada = AdaptiveAugment(self.cfg.ada_target, self.cfg.ada_speed_images)
        self._build_stage("lal")

    # -- optimisers and teachers per stage -------------------------------------------------------------------
    def _build_stage(self, stage: str) -> None:
        c = self.cfg
        embed, mlp = mapping_parameters(self.G)
        if stage == "lal":
            lr, b2 = c.lal_lr * 0.8, 0.99**0.8
            self.opt_g = torch.optim.Adam(
                [
                    {"params": embed, "lr": lr},
                    {"params": mlp + [self.anchors.z], "lr": lr},
                    {"params": [self.anchors.m], "lr": lr * c.lal_magnitude_lr_mult},
                ],
                betas=(0.0, b2),
                eps=1e-8,
            )
            self.opt_d = None
            self.teacher_g = copy.deepcopy(self.G).eval().requires_grad_(False)
            self.teacher_d = None
            self.g_ema = None
        else:
            lr, b2 = c.lsr_lr * 0.8, 0.99**0.8
            self.opt_g = torch.optim.Adam(
                [
                    {"params": synthesis_parameters(self.G), "lr": lr},
                    {"params": mlp + [self.anchors.z], "lr": lr * c.lsr_mapping_lr_mult},
                    {"params": embed, "lr": lr * c.lsr_mapping_lr_mult},
                    {"params": [self.anchors.m], "lr": lr * c.lsr_magnitude_lr_mult},
                ],
                betas=(0.0, b2),
                eps=1e-8,
            )
            ratio = c.r1_every / (c.r1_every + 1)
            d_proj = {id(p) for p in self.D.projection_parameters()}
            self.opt_d = torch.optim.Adam(
                [
                    {
                        "params": [p for p in self.D.parameters() if id(p) not in d_proj],
                        "lr": c.lsr_lr * ratio,
                    },
                    {
                        "params": [p for p in self.D.parameters() if id(p) in d_proj],
                        "lr": c.lsr_lr * ratio * c.d_mapping_lr_mult,
                    },
                ],
                betas=(0.0, 0.99**ratio),
                eps=1e-8,
            )
            # Teachers: the stage-1-tuned mapping with the seen-class synthesis — i.e. G as it is now — and D.
            self.teacher_g = copy.deepcopy(self.G).eval().requires_grad_(False)
            self.teacher_d = copy.deepcopy(self.D).eval().requires_grad_(False)
            self.g_ema = copy.deepcopy(self.G).eval().requires_grad_(False)

    # -- the two stages ---------------------------------------------------------------------------------------
    def _new_labels(self, n: int) -> torch.Tensor:
        return torch.full((n,), self.c_new, dtype=torch.long, device=self.device)

    def _seen(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(n, self.G.style_dim, generator=self.gen).to(self.device)
        return z, torch.randint(0, self.n_seen, (n,), generator=self.gen).to(self.device)

    def _image(self, G: nn.Module, w: torch.Tensor) -> torch.Tensor:
        """``w [B, D]`` (or W+) → images, with per-sample noise maps drawn from the task's generator (not torch's
        global one), so that a resumed task draws exactly what an uninterrupted one would."""
        noise = [
            torch.randn(len(w), 1, *m.shape[2:], generator=self.gen).to(self.device)
            for m in G.noises.as_list()
        ]
        return G(w, input_is_latent=True, noise=noise)[0]

    def lal_step(self) -> dict[str, torch.Tensor]:
        out = lal_loss(
            self.G, self.teacher_g, self.anchors, self.w_inv, self.c_new, self.n_seen, self.cfg, self.gen
        )
        self.opt_g.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.opt_g.step()
        return out

    def lsr_step(self) -> dict[str, torch.Tensor]:
        c, dev = self.cfg, self.device
        k = len(self.shots)
        p = self.ada.p
        aug = lambda x: diff_augment(x, "color,translation,cutout", p, self.gen)  # noqa: E731
        reals = self.shots[torch.arange(c.batch, device=dev) % k]  # [B, 3, S, S]
        labels = self._new_labels(c.batch)
        # ---- D step: the new class's reals vs subspace fakes, plus distillation on the seen classes
        z = torch.randn(c.batch, self.G.style_dim, generator=self.gen).to(dev)
        with torch.no_grad():
            fake = self._image(self.G, self.G.mapping(z, labels, magnitude=1.0))
            z_s, c_s = self._seen(c.seen_batch)
            x_s = self._image(self.teacher_g, self.teacher_g.mapping(z_s, c_s))
            t_feat = self.teacher_d.trunk(x_s)
        real_logits = self.D(aug(reals), labels)
        d_loss = F.softplus(self.D(aug(fake), labels)).mean() + F.softplus(-real_logits).mean()
        d_distill = F.mse_loss(*minmax_joint(t_feat, self.D.trunk(x_s)))
        d_total = d_loss + c.w_seen_d * d_distill
        self.ada.update(real_logits)
        step = self.step["lsr"]
        if c.r1_every and step % c.r1_every == 0:
            d_total = d_total + _lazy_r1(self.D, reals, labels, aug, c)
        self.opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        self.opt_d.step()
        # ---- G step: anchors reproduce the shots, the subspace fools D, the seen classes stay as they were
        with frozen(self.D):
            sigma = self.anchors.sigma
            w_a = self.G.mapping(self.anchors.z, self._new_labels(k), magnitude=sigma)
            recon = self.features.reconstruction(self._image(self.G, w_a), self.shots, c)
            fake = self._image(
                self.G,
                self.G.mapping(
                    torch.randn(c.batch, self.G.style_dim, generator=self.gen).to(dev), labels, magnitude=1.0
                ),
            )
            adv = F.softplus(-self.D(aug(fake), labels)).mean()
            z_s, c_s = self._seen(c.seen_batch)
            with torch.no_grad():
                x_t = self._image(self.teacher_g, self.teacher_g.mapping(z_s, c_s))
            seen = self.features.reconstruction(self._image(self.G, self.G.mapping(z_s, c_s)), x_t, c)
            g_total = (
                c.w_magnitude * sigma.square() + c.w_perceptual * recon + c.w_adv * adv + c.w_seen_g * seen
            )
            self.opt_g.zero_grad(set_to_none=True)
            g_total.backward()
            self.opt_g.step()
        # ---- EMA (half-life in images, ramped up with the images seen so far in this stage)
        seen_images = (step + 1) * c.batch
        half_life = (
            min(c.ema_half_life_images, c.ema_rampup * seen_images)
            if c.ema_rampup
            else c.ema_half_life_images
        )
        accumulate(self.g_ema, self.G, 0.5 ** (c.batch / max(half_life, 1e-8)))
        return {
            "d_loss": d_loss.detach(),
            "d_distill": d_distill.detach(),
            "g_adv": adv.detach(),
            "recon": recon.detach(),
            "seen_img": seen.detach(),
            "sigma": sigma.detach(),
            "ada_p": torch.tensor(self.ada.p),
        }

    def run(self, stage: str, steps: int | None = None, show_progress: bool = False) -> None:
        """Train ``stage`` ("lal" or "lsr") up to ``steps`` (default: the config's) — resumes where it stopped."""
        if stage not in self.step:
            raise ValueError(f"stage must be 'lal' or 'lsr', got {stage!r}")
        total = steps if steps is not None else getattr(self.cfg, f"{stage}_steps")
        if stage == "lsr" and self.g_ema is None:
            self._build_stage("lsr")
        fn = self.lal_step if stage == "lal" else self.lsr_step
        for _ in progress(
            range(self.step[stage], total), desc=f"LSO {stage.upper()}", disable=not show_progress
        ):
            out = fn()
            self.history.add(**{f"{stage}_{k}": v for k, v in out.items() if k != "loss"})
            self.step[stage] += 1

    # -- sampling ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, magnitude: float | None = None, seed: int = 0, batch: int = 64) -> torch.Tensor:
        """``n`` images of the injected class from ``G_ema`` (after LSR; else G) at ``magnitude`` → ``[n, 3, S, S]``."""
        G = (self.g_ema if self.g_ema is not None else self.G).eval()
        s = self.cfg.sample_magnitude if magnitude is None else magnitude
        gen = torch.Generator().manual_seed(seed)
        out = []
        for i in range(0, n, batch):
            m = min(batch, n - i)
            z = torch.randn(m, G.style_dim, generator=gen).to(self.device)
            out.append(self._image(G, G.mapping(z, self._new_labels(m), magnitude=s)).cpu())
        return torch.cat(out) if out else torch.zeros(0, 3, G.size, G.size)

    @torch.no_grad()
    def anchor_images(self) -> torch.Tensor:
        G = self.g_ema if self.g_ema is not None else self.G
        w = G.mapping(self.anchors.z, self._new_labels(len(self.shots)), magnitude=self.anchors.sigma)
        return self._image(G, w).cpu()

    # -- exact resume -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "anchors": self.anchors.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "step": dict(self.step),
            "gen": self.gen.get_state(),
            "ada": self.ada.state_dict(),
            "history": self.history.values,
            "teacher_g": self.teacher_g.state_dict(),
            "stage": "lsr" if self.g_ema is not None else "lal",
        }
        if self.g_ema is not None:
            state.update(
                opt_d=self.opt_d.state_dict(),
                g_ema=self.g_ema.state_dict(),
                teacher_d=self.teacher_d.state_dict(),
            )
        return state

    def load_state_dict(self, state: dict) -> None:
        if state["stage"] == "lsr" and self.g_ema is None:
            self._build_stage("lsr")
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.anchors.load_state_dict(state["anchors"])
        self.teacher_g.load_state_dict(state["teacher_g"])
        self.opt_g.load_state_dict(state["opt_g"])
        if state["stage"] == "lsr":
            self.opt_d.load_state_dict(state["opt_d"])
            self.g_ema.load_state_dict(state["g_ema"])
            self.teacher_d.load_state_dict(state["teacher_d"])
        self.step = dict(state["step"])
        self.gen.set_state(state["gen"])
        self.ada.load_state_dict(state["ada"])
        self.history.values = {k: list(v) for k, v in state["history"].items()}


class InversionFinetuneTask:
    """The ablation *inversion + plain fine-tune*: what LSO's stage 2 does without its two ideas around it — no
    LAL (no anchors, no magnitude, no new class in the mapping: the latents are the shots' inversions, fixed) and
    no seen-class preservation (no teachers, no distillation).

    The synthesis network is fine-tuned as LSR does it — the shots' codes must reproduce the shots
    (``features.reconstruction``: pixel MSE + perceptual + feature terms, weight ``w_perceptual``), images at random
    convex combinations of the codes must fool D (which gets a new class column and the shots as its reals; lazy R1,
    adaptive augmentation), same rates, batch and ``lsr_steps``, EMA — and samples are drawn at random convex
    combinations of the codes through the fine-tuned ``G_ema``. The mapping network is never called.
    ``run()`` is resumable (``state_dict`` / ``load_state_dict``).
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        shots: torch.Tensor,
        w_inv: torch.Tensor,
        features: TrainingFeatures,
        cfg: LSOConfig | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        self.cfg = c = cfg or LSOConfig()
        self.device = torch.device(device)
        check_task_inputs(G, shots, w_inv)
        self.G = copy.deepcopy(G).to(self.device).train()
        self.D = copy.deepcopy(D).to(self.device).train()
        self.c_new = extend_with_new_class(self.G, self.D, seed=seed)  # D's label for the shots
        w = w_inv.to(self.device).float()
        self.w = w if w.dim() == 3 else w[:, None].expand(-1, self.G.n_latent, -1).contiguous()  # [k, L, D]
        self.shots = shots.to(self.device).float()
        self.features = features.to(self.device)
        self.gen = torch.Generator().manual_seed(seed)
        self.ada = AdaptiveAugment(c.ada_target, c.ada_speed_images)
        self.step = 0
        self.history = _History()
        self.opt_g = torch.optim.Adam(
            synthesis_parameters(self.G), lr=c.lsr_lr * 0.8, betas=(0.0, 0.99**0.8), eps=1e-8
        )
        ratio = c.r1_every / (c.r1_every + 1)
        self.opt_d = torch.optim.Adam(
            self.D.parameters(), lr=c.lsr_lr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8
        )
        self.g_ema = copy.deepcopy(self.G).eval().requires_grad_(False)

    def _image(self, G: nn.Module, w: torch.Tensor) -> torch.Tensor:
        noise = [
            torch.randn(len(w), 1, *m.shape[2:], generator=self.gen).to(self.device)
            for m in G.noises.as_list()
        ]
        return G(w, input_is_latent=True, noise=noise)[0]

    def train_step(self) -> dict[str, torch.Tensor]:
        c, dev = self.cfg, self.device
        k = len(self.shots)
        p = self.ada.p
        aug = lambda x: diff_augment(x, "color,translation,cutout", p, self.gen)  # noqa: E731
        reals = self.shots[torch.arange(c.batch, device=dev) % k]  # [B, 3, S, S]
        labels = torch.full((c.batch,), self.c_new, dtype=torch.long, device=dev)
        with torch.no_grad():
            fake = self._image(self.G, convex_codes(self.w, c.batch, self.gen))
        real_logits = self.D(aug(reals), labels)
        d_loss = F.softplus(self.D(aug(fake), labels)).mean() + F.softplus(-real_logits).mean()
        self.ada.update(real_logits)
        d_total = d_loss
        if c.r1_every and self.step % c.r1_every == 0:
            d_total = d_total + _lazy_r1(self.D, reals, labels, aug, c)
        self.opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        self.opt_d.step()
        with frozen(self.D):
            recon = self.features.reconstruction(self._image(self.G, self.w), self.shots, c)
            adv = F.softplus(
                -self.D(aug(self._image(self.G, convex_codes(self.w, c.batch, self.gen))), labels)
            ).mean()
            g_total = c.w_perceptual * recon + c.w_adv * adv
            self.opt_g.zero_grad(set_to_none=True)
            g_total.backward()
            self.opt_g.step()
        seen_images = (self.step + 1) * c.batch
        half_life = (
            min(c.ema_half_life_images, c.ema_rampup * seen_images)
            if c.ema_rampup
            else c.ema_half_life_images
        )
        accumulate(self.g_ema, self.G, 0.5 ** (c.batch / max(half_life, 1e-8)))
        return {
            "d_loss": d_loss.detach(),
            "g_adv": adv.detach(),
            "recon": recon.detach(),
            "ada_p": torch.tensor(self.ada.p),
        }

    def run(self, steps: int | None = None, show_progress: bool = False) -> None:
        """Fine-tune up to ``steps`` (default: the config's ``lsr_steps``, LSR's budget); resumes where it stopped."""
        total = self.cfg.lsr_steps if steps is None else steps
        for _ in progress(range(self.step, total), desc="inversion + fine-tune", disable=not show_progress):
            self.history.add(**self.train_step())
            self.step += 1

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch: int = 64) -> torch.Tensor:
        """``n`` images from ``G_ema`` at random convex combinations of the inverted codes → ``[n, 3, S, S]``."""
        return inversion_only_samples(self.g_ema.eval(), self.w, n, seed=seed, batch=batch)

    def state_dict(self) -> dict:
        return {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "g_ema": self.g_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step": self.step,
            "gen": self.gen.get_state(),
            "ada": self.ada.state_dict(),
            "history": self.history.values,
        }

    def load_state_dict(self, state: dict) -> None:
        for name in ("G", "D", "g_ema", "opt_g", "opt_d", "ada"):
            getattr(self, name).load_state_dict(state[name])
        self.step = int(state["step"])
        self.gen.set_state(state["gen"])
        self.history.values = {k: list(v) for k, v in state["history"].items()}


def shipped_task_samples(
    seed: int, folder: str | os.PathLike | None = None
) -> tuple[dict[str, np.ndarray], dict] | None:
    """The samples ``scripts/run_lso_tasks.py --seed <seed>`` shipped (``data/lso/lso_samples_seed<seed>.npz``),
    checked against the sha256 of their manifest → ``(arrays, manifest)``; ``None`` when they are not shipped.

    ``arrays``: ``images [N, S, S, 3]`` uint8 with per-image ``method``, ``magnitude``, ``task`` (class),
    ``episode``, ``validation``, ``seed``; per task ``shots [T, k, S, S, 3]``, ``task_class``, ``task_episode``,
    ``task_sigma`` (σ(m) after LSR). Raises ``ValueError`` naming the file when it does not match its manifest.
    """
    folder = Path(folder) if folder is not None else data_dir() / "lso"
    path = folder / f"lso_samples_seed{seed}.npz"
    return (
        read_task_samples(path, f"re-run scripts/run_lso_tasks.py --seed {seed}") if path.is_file() else None
    )


def read_task_samples(
    path: str | os.PathLike, remedy: str = "re-run scripts/run_lso_tasks.py"
) -> tuple[dict, dict]:
    """A samples file of ``scripts/run_lso_tasks.py`` and its manifest (``<stem>.manifest.json`` beside it),
    checked against the manifest's sha256 → ``(arrays, manifest)``; ``ValueError`` naming the file and ``remedy``
    when the manifest is missing or does not match."""
    path = Path(path)
    man_path = path.with_name(f"{path.stem}.manifest.json")
    if not man_path.is_file():
        raise ValueError(f"{path.name} has no manifest {man_path.name}; {remedy}")
    manifest = json.loads(man_path.read_text())
    if manifest.get("sha256") != file_sha256(path):
        raise ValueError(f"{path.name} does not match the sha256 in {man_path.name}; {remedy}")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return arrays, manifest
