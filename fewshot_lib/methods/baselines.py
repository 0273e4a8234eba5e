"""Few-shot adaptation of a pretrained StyleGAN2: the shared loop and the classic baselines.

Every adaptation method in this package starts from a generator/discriminator pair trained on a large
*source* domain (here: all noto emoji) and continues training on ``k ≈ 10`` *target* images. They differ only
in a few decisions, which :class:`Adapter` exposes as overridable methods:

==================  ================================================================================
method              what changes
==================  ================================================================================
TGAN                nothing — plain fine-tuning of G and D (Wang et al., "Transferring GANs", 2018)
FreezeD             the first ``n`` discriminator blocks (the high-resolution, "low-level" layers)
                    keep their source weights (Mo et al., 2020): D can only re-learn its later layers
EWC (optional)      a quadratic penalty pulling G's weights towards the source, weighted by each
                    weight's Fisher information (Li et al., "Few-shot image generation with EWC", 2020)
CDC                 (``cdc.py``) distance consistency + anchors/patch D (subclass :class:`~.cdc.CDCAdapter`)
==================  ================================================================================

Every method sees the same data, the same optimiser (Adam, ``β = (0, 0.99)``, lazy R1 every 16 steps with the
StyleGAN2 learning-rate correction) and the same G EMA, so their results differ because of the method alone.
Differences from rosinality/CDC's training script, for speed on a CPU: no path-length regulariser and no
style mixing (both optional refinements that do not change what the methods do).

One iteration (:meth:`Adapter.step`):

1. **D step.** ``x_real [B,3,H,W]`` (random shots, horizontal flips), ``x_fake = G(z)``; logistic loss
   ``softplus(-D(x_real)) + softplus(D(x_fake))`` (averaged over images — or over patches for a patch D);
   every ``d_reg_every`` steps the R1 penalty ``γ/2·‖∇_x D(x_real)‖²`` on the image-level D.
2. **G step.** Non-saturating ``softplus(-D(G(z)))`` plus :meth:`Adapter.extra_generator_loss` (CDC: its
   distance consistency; EWC: the penalty).
3. **EMA.** ``G_ema ← β·G_ema + (1-β)·G``; evaluation uses ``G_ema``.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# The generator interface these methods rely on
# ---------------------------------------------------------------------------------------------------------


def latent_dim(generator: nn.Module) -> int:
    """The size of ``z`` for a ``fewshot_lib.models.stylegan2.Generator`` (its ``style_dim``)."""
    for name in ("z_dim", "style_dim"):
        if hasattr(generator, name):
            return int(getattr(generator, name))
    raise ValueError(f"cannot tell the latent size of {type(generator).__name__}: no z_dim/style_dim attribute")


Latents = torch.Tensor | list[torch.Tensor]


def generate(generator: nn.Module, z: Latents) -> torch.Tensor:
    """``z [B, z_dim]`` (or a list of two for style mixing) → images ``[B, 3, H, W]`` (fresh noise maps)."""
    out = generator(z)
    return out[0] if isinstance(out, (tuple, list)) else out


def generate_with_features(generator: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``z [B, z_dim]`` → ``(images [B,3,H,W], features)``: one ``[B, C_l, H_l, W_l]`` per synthesis conv."""
    out = generator(z, return_features=True)
    if not (isinstance(out, (tuple, list)) and len(out) >= 2):
        raise ValueError("generator(z, return_features=True) must return (images, features)")
    return out[0], list(out[-1])


# ---------------------------------------------------------------------------------------------------------
# Configuration and the shared loop
# ---------------------------------------------------------------------------------------------------------


@dataclass
class AdaptConfig:
    """Hyper-parameters shared by every adaptation method (reference values in brackets).

    Attributes:
        batch: images per D/G step [4].
        lr: Adam learning rate [0.002].
        r1: R1 weight γ [10]; applied every ``d_reg_every`` [16] steps with the lazy-regularisation factor.
        ema_half_life: G EMA half-life in iterations [312.5 = rosinality's ``0.5^(32/10000)`` per step];
            ``0`` = a tenth of the run's steps (short CPU runs would otherwise evaluate a G that barely
            moved).
        flip: random horizontal flips of the target shots [on].
        freeze_d: FreezeD — number of leading discriminator blocks (``convs[0..n-1]``: FromRGB, then the
            highest-resolution blocks) kept frozen [0 = TGAN].
        mixing: probability of style mixing (two latents, a random cross-over layer) for the adversarial
            latents [0.9]. Needs a generator that accepts a list of two latents.
        ewc: EWC weight (0 = off).
    """

    batch: int = 4
    lr: float = 0.002
    r1: float = 10.0
    d_reg_every: int = 16
    ema_half_life: float = 0.0
    flip: bool = True
    freeze_d: int = 0
    mixing: float = 0.9
    ewc: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def freeze_discriminator_blocks(discriminator: nn.Module, n_blocks: int) -> list[str]:
    """FreezeD: set ``requires_grad=False`` on ``discriminator.convs[:n_blocks]``; returns the frozen names."""
    if n_blocks < 0:
        raise ValueError(f"n_blocks must be ≥ 0, got {n_blocks}")
    if not hasattr(discriminator, "convs"):
        raise ValueError(f"{type(discriminator).__name__} has no .convs blocks to freeze")
    blocks = list(discriminator.convs)
    if n_blocks >= len(blocks):
        raise ValueError(f"cannot freeze {n_blocks} blocks: the discriminator has {len(blocks)} (leave at least one "
                         "block and the epilogue trainable)")
    frozen = []
    for i, block in enumerate(blocks[:n_blocks]):
        for name, p in block.named_parameters():
            p.requires_grad_(False)
            frozen.append(f"convs.{i}.{name}")
    return frozen


def r1_penalty(logits_fn: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """``E ‖∇_x D(x)‖²`` over real images ``[B,3,H,W]`` (summed over pixels, mean over the batch)."""
    real = real.detach().requires_grad_(True)
    logits = logits_fn(real)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


class Adapter:
    """The few-shot adaptation loop shared by TGAN, FreezeD, EWC and CDC.

    Args:
        generator, discriminator: the *source* models (copied; the originals are never modified).
        target: the ``k`` target images ``[k, 3, H, W]`` in [-1, 1].
        config: :class:`AdaptConfig`.
        generator_rng: seeded CPU ``torch.Generator`` for every random draw of the loop (latents, shots,
            flips), so a seed gives the same run on every device.
        device: where to train.

    Subclasses override :meth:`sample_latents`, :meth:`discriminate` and :meth:`extra_generator_loss`.
    """

    name = "tgan"

    def __init__(self, generator: nn.Module, discriminator: nn.Module, target: torch.Tensor,
                 config: AdaptConfig | None = None, generator_rng: torch.Generator | None = None,
                 device: str | torch.device = "cpu") -> None:
        if target.dim() != 4 or target.shape[1] != 3:
            raise ValueError(f"target must be images [k, 3, H, W], got shape {tuple(target.shape)}")
        if len(target) < 1:
            raise ValueError("target is empty: adaptation needs at least one image")
        self.config = config or AdaptConfig()
        self.device = torch.device(device)
        self.rng = generator_rng or torch.Generator().manual_seed(0)
        self.target = target.to(self.device)
        self.source = copy.deepcopy(generator).to(self.device).eval().requires_grad_(False)
        self.g = copy.deepcopy(generator).to(self.device).train().requires_grad_(True)
        self.g_ema = copy.deepcopy(generator).to(self.device).eval().requires_grad_(False)
        self.d = copy.deepcopy(discriminator).to(self.device).train().requires_grad_(True)
        self.z_dim = latent_dim(generator)
        self.frozen_d = freeze_discriminator_blocks(self.d, self.config.freeze_d) if self.config.freeze_d else []
        self.ewc_fisher: dict[str, torch.Tensor] = {}
        self.steps_done = 0
        self.history: list[dict[str, float]] = []
        self.setup()
        self._d_trainable = [p for p in self.d_modules().parameters() if p.requires_grad]
        self._build_optimisers()

    # -- pieces subclasses change ----------------------------------------------------------------------
    def setup(self) -> None:
        """Build method-specific modules (called once, before the optimisers are created)."""

    def d_modules(self) -> nn.Module:
        """The module holding every discriminator-side parameter (CDC: D plus its patch heads)."""
        return self.d

    def d_parameters(self) -> list[nn.Parameter]:
        """Trainable discriminator-side parameters (FreezeD's frozen blocks excluded)."""
        return self._d_trainable

    def begin_step(self, step: int) -> None:
        """Per-iteration decisions shared by the D and G steps (CDC: which patch head)."""

    def _build_optimisers(self) -> None:
        c = self.config.d_reg_every / (self.config.d_reg_every + 1)  # StyleGAN2 lazy-regularisation factor
        self.g_opt = torch.optim.Adam(self.g.parameters(), lr=self.config.lr, betas=(0.0, 0.99))
        self.d_opt = torch.optim.Adam(self.d_parameters(), lr=self.config.lr * c, betas=(0.0, 0.99 ** c))

    def sample_latents(self, step: int) -> Latents:
        """Latents for this step's adversarial terms, on ``self.device``: ``[B, z_dim]``, or with probability
        ``config.mixing`` a list of two (style mixing). Drawn on the CPU from ``self.rng``."""
        return self.mixing_latents()

    def mixing_latents(self) -> Latents:
        b = self.config.batch
        if self.config.mixing > 0 and float(torch.rand((), generator=self.rng)) < self.config.mixing:
            return [torch.randn(b, self.z_dim, generator=self.rng).to(self.device) for _ in range(2)]
        return torch.randn(b, self.z_dim, generator=self.rng).to(self.device)

    def discriminate(self, images: torch.Tensor, step: int) -> torch.Tensor:
        """Discriminator logits for this step (``[B, 1]``, or ``[B, 1, h, w]`` for a patch D)."""
        return self.d(images)

    def image_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Image-level logits ``[B, 1]`` (used by R1)."""
        return self.d(images)

    def extra_generator_loss(self, step: int) -> dict[str, torch.Tensor]:
        """Method-specific G loss terms (already weighted); summed into the G loss and logged by name."""
        if self.config.ewc > 0:
            return {"ewc": self.config.ewc * self.ewc_penalty()}
        return {}

    # -- EWC ---------------------------------------------------------------------------------------------
    def estimate_fisher(self, n_batches: int = 4) -> None:
        """EWC: diagonal Fisher information of G's weights at the source, ``F = E[(∂ log D(G(z)) / ∂θ)²]``."""
        fisher = {n: torch.zeros_like(p) for n, p in self.source.named_parameters()}
        src = copy.deepcopy(self.source).requires_grad_(True)
        for _ in range(n_batches):
            z = torch.randn(self.config.batch, self.z_dim, generator=self.rng).to(self.device)
            loss = F.softplus(-self.image_logits(generate(src, z))).mean()
            grads = torch.autograd.grad(loss, list(src.parameters()), allow_unused=True)
            for (n, _), g in zip(src.named_parameters(), grads):
                if g is not None:
                    fisher[n] += g.detach().pow(2) / n_batches
        self.ewc_fisher = fisher

    def ewc_penalty(self) -> torch.Tensor:
        if not self.ewc_fisher:
            self.estimate_fisher()
        src = dict(self.source.named_parameters())
        return sum((self.ewc_fisher[n] * (p - src[n]).pow(2)).sum() for n, p in self.g.named_parameters())

    # -- the loop ----------------------------------------------------------------------------------------
    def real_batch(self) -> torch.Tensor:
        """``[B, 3, H, W]``: shots drawn with replacement, randomly flipped."""
        idx = torch.randint(0, len(self.target), (self.config.batch,), generator=self.rng)
        x = self.target[idx.to(self.device)]
        if self.config.flip:
            flip = (torch.rand(self.config.batch, generator=self.rng) < 0.5).to(self.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

    def ema_beta(self, total_steps: int) -> float:
        half_life = self.config.ema_half_life or max(1.0, total_steps / 10)
        return 0.5 ** (1.0 / half_life)

    @torch.no_grad()
    def update_ema(self, beta: float) -> None:
        for p_ema, p in zip(self.g_ema.parameters(), self.g.parameters()):
            p_ema.lerp_(p, 1.0 - beta)
        for b_ema, b in zip(self.g_ema.buffers(), self.g.buffers()):
            b_ema.copy_(b)

    def step(self, total_steps: int) -> dict[str, float]:
        """One D step, one G step and the EMA update; returns the logged losses."""
        i = self.steps_done
        cfg = self.config
        logs: dict[str, float] = {}
        self.begin_step(i)

        # D step: real shots vs G(z)
        self.g.requires_grad_(False)
        z = self.sample_latents(i)
        with torch.no_grad():
            fake = generate(self.g, z)
        real = self.real_batch()
        d_real, d_fake = self.discriminate(real, i), self.discriminate(fake, i)
        d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        if cfg.r1 > 0 and i % cfg.d_reg_every == 0:
            r1 = r1_penalty(self.image_logits, real)
            d_loss = d_loss + cfg.r1 / 2 * r1 * cfg.d_reg_every
            logs["r1"] = r1.item()
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
        logs.update(d_loss=d_loss.item(), d_real=d_real.mean().item(), d_fake=d_fake.mean().item())

        # G step: non-saturating adversarial loss + the method's terms
        self.g.requires_grad_(True)
        for p in self.d_parameters():
            p.requires_grad_(False)
        z = self.sample_latents(i)
        g_adv = F.softplus(-self.discriminate(generate(self.g, z), i)).mean()
        extras = self.extra_generator_loss(i)
        g_loss = g_adv + sum(extras.values()) if extras else g_adv
        self.g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_opt.step()
        for p in self.d_parameters():
            p.requires_grad_(True)
        logs["g_adv"] = g_adv.item()
        logs.update({k: v.item() for k, v in extras.items()})

        self.update_ema(self.ema_beta(total_steps))
        self.steps_done += 1
        logs["step"] = self.steps_done
        self.history.append(logs)
        return logs

    def train(self, steps: int, callback: Callable[["Adapter", dict], None] | None = None,
              every: int = 0, show_progress: bool = True) -> list[dict[str, float]]:
        """Run ``steps`` iterations; ``callback(self, logs)`` every ``every`` steps (and at the end)."""
        from ..progress import progress

        if steps < 0:
            raise ValueError(f"steps must be ≥ 0, got {steps}")
        bar = progress(range(steps), desc=self.name, disable=not show_progress)
        for k in bar:
            logs = self.step(steps)
            if callback is not None and every and ((k + 1) % every == 0 or k + 1 == steps):
                callback(self, logs)
        return self.history

    @torch.no_grad()
    def sample(self, z: torch.Tensor, ema: bool = True) -> torch.Tensor:
        """Images of the adapted generator for ``z [N, z_dim]`` (batched) → ``[N, 3, H, W]`` on the CPU."""
        g = self.g_ema if ema else self.g
        return torch.cat([generate(g, zb.to(self.device)).cpu() for zb in z.split(64)])

    def state_dict(self) -> dict:
        """Everything needed to evaluate or resume (tensors and plain values only: ``weights_only`` loads)."""
        return {"method": self.name, "config": self.config.as_dict(), "steps": self.steps_done,
                "g": self.g.state_dict(), "g_ema": self.g_ema.state_dict(),
                "d": self.d_modules().state_dict()}


class TGANAdapter(Adapter):
    """TGAN: plain fine-tuning of G and D on the target shots (the baseline every method must beat)."""

    name = "tgan"


class FreezeDAdapter(Adapter):
    """FreezeD: fine-tuning with the first ``config.freeze_d`` discriminator blocks frozen (default 2)."""

    name = "freezed"

    def __init__(self, generator: nn.Module, discriminator: nn.Module, target: torch.Tensor,
                 config: AdaptConfig | None = None, generator_rng: torch.Generator | None = None,
                 device: str | torch.device = "cpu") -> None:
        config = config or AdaptConfig(freeze_d=2)
        if config.freeze_d < 1:
            raise ValueError(f"FreezeD needs config.freeze_d ≥ 1 (got {config.freeze_d}); freeze_d=0 is TGAN")
        super().__init__(generator, discriminator, target, config, generator_rng, device)


class EWCAdapter(Adapter):
    """EWC: fine-tuning with an elastic penalty towards the source weights (``config.ewc`` > 0)."""

    name = "ewc"

    def __init__(self, generator: nn.Module, discriminator: nn.Module, target: torch.Tensor,
                 config: AdaptConfig | None = None, generator_rng: torch.Generator | None = None,
                 device: str | torch.device = "cpu") -> None:
        config = config or AdaptConfig(ewc=5e8)
        if config.ewc <= 0:
            raise ValueError(f"EWC needs config.ewc > 0 (got {config.ewc})")
        super().__init__(generator, discriminator, target, config, generator_rng, device)


# ---------------------------------------------------------------------------------------------------------
# Evaluation shared by every adaptation method
# ---------------------------------------------------------------------------------------------------------


class AdaptationEvaluator:
    """Scores an adapted generator the same way for every method (fixed latents, fixed real sets).

    * ``fid`` — FID of ``G(z)`` against the whole target style (``target_real``; lower is better);
    * ``intra_cluster_lpips`` — CDC's diversity around each of the ``shots`` (higher is better);
    * ``nn_modes`` / ``nn_lpips`` — how many shots are some sample's nearest neighbour / the mean distance to
      it (≈0 = copies);
    * ``correspondence`` — how often ``G(z)`` shows the same concept as ``G_source(z)``
      (:func:`fewshot_lib.metrics.correspondence.correspondence_score`), with its ``correspondence_chance``.

    Real-image features are computed once here; each call generates ``len(z)`` images.

    Args:
        source: the source generator (its images of ``z`` are computed once).
        z: fixed latents ``[N, z_dim]`` (CPU).
        shots: the ``k`` training images ``[k,3,H,W]``.
        target_real: every image of the target style ``[M,3,H,W]``.
        source_gallery, source_labels / target_gallery, target_labels: labelled real images of the source and
            target styles for the correspondence score (``None``: no labels, e.g. your own image folder —
            the correspondence entries are then NaN).
        extractor: feature extractor name or object (default: the project's emoji network).
    """

    def __init__(self, source: nn.Module, z: torch.Tensor, shots: torch.Tensor, target_real: torch.Tensor,
                 source_gallery: torch.Tensor | None = None, source_labels=None,
                 target_gallery: torch.Tensor | None = None, target_labels=None,
                 extractor: str = "emoji", device: str | torch.device = "cpu") -> None:
        from ..metrics.result import resolve_extractor

        self.device = torch.device(device)
        self.ext = resolve_extractor(extractor, self.device)
        self.z = z.cpu()
        self.shots = shots.cpu()
        quiet = dict(show_progress=False)
        self.shot_embedding = self.ext.distance_embedding(self.shots, **quiet)
        self.target_features = self.ext.features(target_real, **quiet)
        self.has_labels = source_gallery is not None and target_gallery is not None
        if self.has_labels and (source_labels is None or target_labels is None):
            raise ValueError("source_gallery and target_gallery need source_labels and target_labels")
        self.source_gallery = self.ext.features(source_gallery, **quiet) if self.has_labels else None
        self.target_gallery = self.ext.features(target_gallery, **quiet) if self.has_labels else None
        self.source_labels, self.target_labels = source_labels, target_labels
        self.source_images = self.generate(source)
        self.source_features = self.ext.features(self.source_images, **quiet)

    @torch.no_grad()
    def generate(self, generator: nn.Module) -> torch.Tensor:
        """``G(z)`` for the fixed latents → ``[N, 3, H, W]`` on the CPU (fresh noise maps)."""
        dev = next(generator.parameters()).device
        was_training = generator.training
        generator.eval()
        out = torch.cat([generate(generator, zb.to(dev)).cpu() for zb in self.z.split(128)])
        generator.train(was_training)
        return out

    def __call__(self, generator: nn.Module, images: torch.Tensor | None = None) -> dict[str, float]:
        """All scores of ``generator`` (or of precomputed ``images`` of the fixed latents) as plain floats."""
        from ..metrics.correspondence import correspondence_score
        from ..metrics.diversity import intra_cluster_lpips, nn_modes
        from ..metrics.fid import fid

        fake = self.generate(generator) if images is None else images
        emb = self.ext.distance_embedding(fake, show_progress=False)
        fake_features = self.ext.features(fake, show_progress=False)
        f = fid(self.target_features, fake_features, self.ext)
        icl = intra_cluster_lpips(emb, self.shot_embedding, self.ext)
        modes = nn_modes(emb, self.shot_embedding, self.ext)
        scores = {"fid": f.value, "intra_cluster_lpips": icl.value, "nn_modes": float(modes.value),
                  "nn_lpips": modes.details["nn_lpips"], "correspondence": float("nan"),
                  "correspondence_chance": float("nan")}
        if self.has_labels:
            corr = correspondence_score(self.source_features, fake_features, self.source_gallery,
                                        self.source_labels, self.target_gallery, self.target_labels, self.ext)
            scores.update(correspondence=corr.value, correspondence_chance=corr.details["chance"])
        return scores

    @property
    def extractor_name(self) -> str:
        return self.ext.name


def run_adaptation(adapter_cls: type[Adapter], generator: nn.Module, discriminator: nn.Module,
                   shots: torch.Tensor, config: AdaptConfig, steps: int, seed: int = 0,
                   device: str | torch.device = "cpu", evaluator: AdaptationEvaluator | None = None,
                   eval_every: int = 0, show_progress: bool = True) -> tuple[Adapter, list[dict[str, float]]]:
    """Seed everything, adapt for ``steps`` iterations and (optionally) evaluate along the way.

    Returns ``(adapter, curve)`` where ``curve`` holds ``{"step": s, **evaluator(G_ema)}`` at step 0 and every
    ``eval_every`` steps (empty without an evaluator or with ``eval_every=0``).
    """
    from ..config import seed_everything

    rng = seed_everything(seed)
    adapter = adapter_cls(generator, discriminator, shots, config, rng, device)
    curve: list[dict[str, float]] = []
    if evaluator is not None and eval_every > 0:
        curve.append({"step": 0, **evaluator(adapter.g_ema)})

        def callback(a: Adapter, logs: dict) -> None:
            curve.append({"step": a.steps_done, **evaluator(a.g_ema)})
    else:
        callback = None
    adapter.train(steps, callback=callback, every=eval_every, show_progress=show_progress)
    return adapter, curve
