"""MixDL — few-shot image generation with mixup-based distance learning (Kong et al., ECCV 2022).

**The problem.** Train a GAN *from scratch* on ~10 images and the generator soon does the only thing that
fools its discriminator: it reproduces the 10 images. The latent space collapses onto a few points, and a walk
between two latents looks like a staircase — nothing changes for a while, then the picture jumps to the next
training image. Generated images are sharp but not new.

**The idea.** Ask the generator to treat the space *between* samples smoothly. Draw ``K`` anchor latents and a
*mixup* latent ``w_mix = Σ_j c_j w_j`` whose coefficients ``c`` lie on the simplex (``c ~ Dirichlet(α)``).
The image of ``w_mix`` should resemble each anchor image *in proportion to* ``c``: close to the anchors it
mixes a lot of, far from the others. MixDL turns this into a loss on *relative distances*, exactly CDC's
building block (:func:`fewshot_lib.methods.cdc.similarity_kl`):

1. **Generator distance loss.** Features of the mixup image and of the anchor images at a random generator
   layer; cosine similarity of the mixup to every anchor; softmax over anchors → ``p_i``; the loss is
   ``KL(q_i ‖ p_i)`` with target ``q_i = softmax(c_i)``, weight ``λ_G = 1000``.
2. **Discriminator alignment.** The same KL on the discriminator's penultimate features, passed through a
   small linear *projection head* (:class:`ProjectionHead`), weight ``λ_D = 1``: D's representation is asked
   to order mixups like the coefficients, which keeps its feature space from degenerating into "one of the
   10 / not one of the 10".
3. **Patch-level realism for mixups.** A mixup image need not look like a *whole* training image — only
   locally realistic. On mixup iterations D judges real images and mixup images patch by patch
   (CDC's :class:`~fewshot_lib.models.patch_discriminator.PatchDiscriminator`).

**The reference code's behaviour, reproduced here** (see ``reference/methods_stylegan2_cdc_mixdl.md`` §5):

* Iteration ``i`` with ``i % mixup_every == 0`` (``mixup_every = 2``) is a *mixup iteration*; the others
  are ordinary StyleGAN2 iterations.
* Coefficients: one row per mixup, ``c_i ~ Dir(α·1_K)`` with ``α = 1`` (uniform on the simplex); the number of
  anchors ``K`` and of mixups both equal the batch size.
* D step of a mixup iteration: ``softplus(-D_patch(x_real)) + softplus(D_patch(x_mix))`` plus
  ``λ_D · KL`` on the projected penultimate features of ``cat[x_anchor, x_mix]`` (one ``2B`` batch through
  the full D). Anchor images enter only the distance term.
* G step of a mixup iteration: ``softplus(-D_patch(x_mix))`` plus ``λ_G · KL`` computed with the same
  coefficients on *new* anchors; both the anchor and the mixup branch keep their gradients. Each mixup ``i``
  uses its own random generator layer ``l_i ∈ {1, …, num_layers − 2}`` (the last conv is excluded).
* The target is ``softmax(c_i)``, not ``c_i`` (a one-hot ``c`` becomes ``[0.475, 0.175, 0.175, 0.175]``), and
  ``KLDivLoss(reduction="mean")`` divides by ``B·K``; ``λ_G = 1000`` is calibrated to both.

**Where this implementation differs, on purpose.**

* **Mixing happens in W with shape ``[B, w_dim]``**, before the generator broadcasts w to its layers. The
  reference takes the broadcast ``[B, n_latent, 512]`` tensor and crashes on its first iteration
  (``matmul(alpha, w)``, issue chaerinkong/mixdl#4); :func:`mix_latents` refuses 3-D input with an explanation.
* Patch logits come from CDC's :class:`PatchDiscriminator` (a map chosen by relative depth, so 32 px models
  really have patches; one head by default — the reference samples one of four maps at 256 px).
* ``target="coefficients"`` selects the paper's form (the coefficients themselves as the target).
* As an add-on to the shared trainer (:class:`MixDLHook`), a mixup iteration *adds* the mixup terms to the
  ordinary ones (whose fakes are then also judged by patches) instead of replacing the ordinary fakes.
* Every loop over pairs is a matrix product; everything runs on CPU, CUDA or MPS.

Taught in: ``notebooks/05_mixdl.ipynb``; its section 9 loads, for every shipped seed (its own 10 shots), the pair
of generators trained 10 000 iterations by ``scripts/train_mixdl_showcase.py`` (:func:`shipped_showcase_seeds`,
:func:`load_showcase_generator`, measured by :func:`fewshot_lib.metrics.generator.memorisation_metrics`, judged
by :func:`showcase_bar` on the last quarter of their training trajectories).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import artifacts

from ..models.patch_discriminator import PatchDiscriminator
from ..models.stylegan2 import Discriminator, EqualLinear, Generator
from ..train import GANHook, GANTrainer, StepContext, TrainConfig
from .cdc import kl_from_logits, similarity_logits

log = logging.getLogger(__name__)

Target = Literal["softmax", "coefficients"]


# ---------------------------------------------------------------------------------------------------------
# 1. Mixup coefficients and mixing in W
# ---------------------------------------------------------------------------------------------------------


def dirichlet_coefficients(
    n_mix: int, n_anchors: int, alpha: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mixup coefficients: ``n_mix`` rows, each a point on the ``n_anchors``-simplex, ``c_i ~ Dir(α·1)``.

    ``α = 1`` is uniform on the simplex (the reference default); ``α → 0`` gives nearly one-hot rows (mixups
    close to single anchors), large ``α`` rows close to the centre ``1/K``. Returns ``[n_mix, n_anchors]``
    float32 on the CPU; every row is positive and sums to 1.

    The draw is seeded from ``generator`` (a CPU ``torch.Generator``) through NumPy's Dirichlet sampler, so
    the same seed gives the same coefficients on every device.
    """
    if n_mix < 1 or n_anchors < 2:
        raise ValueError(
            f"need n_mix ≥ 1 and n_anchors ≥ 2 (a mixup of one anchor is the anchor), "
            f"got n_mix={n_mix}, n_anchors={n_anchors}"
        )
    if not alpha > 0:
        raise ValueError(f"alpha (the Dirichlet concentration) must be > 0, got {alpha}")
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    c = np.random.default_rng(seed).dirichlet(np.full(n_anchors, float(alpha)), size=n_mix)
    c = np.maximum(c, 1e-12)  # tiny α can underflow to exact zeros; keep every row strictly on the simplex
    return torch.from_numpy(c / c.sum(axis=1, keepdims=True)).float()


def mix_latents(w: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Convex combinations of anchor latents: ``w_mix = coeffs @ w``.

    Shapes: ``w [K, w_dim]`` (the mapping network's outputs, one per anchor), ``coeffs [B, K]`` → ``[B, w_dim]``.

    The mixing must happen on the ``[K, w_dim]`` mapping outputs. The reference code mixed the generator's
    broadcast latent ``[K, n_latent, w_dim]`` and crashed; a 3-D ``w`` is refused here with that explanation.
    """
    if w.dim() == 3:
        raise ValueError(
            f"w has shape {tuple(w.shape)} = [K, n_latent, w_dim]: that is the latent after broadcasting to the "
            "generator's layers. Mix the mapping outputs [K, w_dim] (G.mapping(z)) instead — mixing the "
            "broadcast tensor is what makes the reference implementation crash (coeffs @ w with mismatched "
            "batch dimensions)."
        )
    if w.dim() != 2:
        raise ValueError(f"w must be [K, w_dim], got shape {tuple(w.shape)}")
    if coeffs.dim() != 2 or coeffs.shape[1] != w.shape[0]:
        raise ValueError(
            f"coeffs must be [B, K] with K = {w.shape[0]} anchors, got shape {tuple(coeffs.shape)}"
        )
    return coeffs.to(device=w.device, dtype=w.dtype) @ w  # [B, w_dim]


def target_distribution(coeffs: torch.Tensor, target: Target = "softmax") -> torch.Tensor:
    """What each mixup's similarity distribution should match: ``softmax(c)`` (reference) or ``c`` (paper).

    ``coeffs [B, K]`` → ``[B, K]``, rows summing to 1.
    """
    if target == "softmax":
        return F.softmax(coeffs, dim=1)
    if target == "coefficients":
        return coeffs
    raise ValueError(
        f"target must be 'softmax' (the reference code) or 'coefficients' (the paper), got {target!r}"
    )


# ---------------------------------------------------------------------------------------------------------
# 2. The distance losses
# ---------------------------------------------------------------------------------------------------------


def mixup_distance_loss(
    mix_features: torch.Tensor,
    anchor_features: torch.Tensor,
    coeffs: torch.Tensor,
    target: Target = "softmax",
    reduction: str = "mean",
) -> torch.Tensor:
    """``KL(q_i ‖ softmax_j cos(f_mix_i, f_anchor_j))`` for one feature space (no λ).

    Shapes: ``mix_features [B, ...]``, ``anchor_features [K, ...]`` (same per-sample size; flattened),
    ``coeffs [B, K]``. ``q = target_distribution(coeffs)``. ``reduction="mean"`` (sum over entries / ``B·K``)
    reproduces the reference's ``nn.KLDivLoss()`` scaling.
    """
    logits = similarity_logits(mix_features, keys=anchor_features)  # [B, K]
    return kl_from_logits(logits, target_distribution(coeffs, target), reduction)


def sample_mixup_layers(n: int, n_layers: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One generator layer per mixup, uniform over ``1 … n_layers − 2`` → ``[n]`` long.

    The reference draws ``randint(1, num_layers − 1)``: never the 4×4 constant-input conv (layer 0), never
    the last, full-resolution conv.
    """
    if n_layers < 3:
        raise ValueError(f"need at least 3 generator feature layers, got {n_layers}")
    return torch.randint(1, n_layers - 1, (n,), generator=generator)


def layerwise_mixup_logits(
    mix_features: list[torch.Tensor], anchor_features: list[torch.Tensor], layer_per_mix: torch.Tensor
) -> torch.Tensor:
    """Row ``i``: cosine similarities of mixup ``i`` to every anchor, at mixup ``i``'s own layer ``l_i``.

    ``mix_features[l] [B, C_l, H_l, W_l]``, ``anchor_features[l] [K, C_l, H_l, W_l]``, ``layer_per_mix [B]``
    → ``[B, K]``.
    """
    if len(mix_features) != len(anchor_features):
        raise ValueError(f"got {len(mix_features)} mixup and {len(anchor_features)} anchor feature layers")
    b = mix_features[0].shape[0]
    if layer_per_mix.shape != (b,):
        raise ValueError(f"layer_per_mix must have shape [{b}], got {tuple(layer_per_mix.shape)}")
    rows: list[torch.Tensor | None] = [None] * b
    for layer in layer_per_mix.unique().tolist():
        idx = torch.nonzero(layer_per_mix == layer).flatten()
        logits = similarity_logits(
            mix_features[layer][idx.to(mix_features[layer].device)], keys=anchor_features[layer]
        )  # [n_l, K]
        for r, i in enumerate(idx.tolist()):
            rows[i] = logits[r]
    return torch.stack(rows)  # [B, K]


def generator_distance_loss(
    mix_features: list[torch.Tensor],
    anchor_features: list[torch.Tensor],
    coeffs: torch.Tensor,
    layer_per_mix: torch.Tensor,
    target: Target = "softmax",
    reduction: str = "mean",
) -> torch.Tensor:
    """MixDL's generator loss ``L_G^dist`` (without ``λ_G``) from per-layer features of mixups and anchors.

    Gradients flow into both the mixup and the anchor features (the reference keeps both graphs).
    """
    logits = layerwise_mixup_logits(mix_features, anchor_features, layer_per_mix)  # [B, K]
    return kl_from_logits(logits, target_distribution(coeffs, target).to(logits.device), reduction)


class ProjectionHead(nn.Module):
    """A linear projection of the discriminator's penultimate features, where D's distance loss is taken.

    ``[N, in_dim]`` → ``[N, out_dim]`` (no activation; equalised learning rate like the rest of D). The head
    gives D a separate space to align with the mixup coefficients, so the distance loss does not have to
    bend the features its real/fake logit is read from. It is trained with D's optimiser and saved with D.
    """

    def __init__(self, in_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"in_dim must be ≥ 1, got {in_dim}")
        self.linear = EqualLinear(in_dim, out_dim or in_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [N, in_dim] -> [N, out_dim]
        return self.linear(h)


def penultimate_features(discriminator: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The discriminator's last hidden vector ``[N, C]`` (input of its final linear layer) for ``images``."""
    _, feats = discriminator(images, return_features=True)
    return feats[-1]


def discriminator_distance_loss(
    discriminator: nn.Module,
    head: ProjectionHead,
    anchor_images: torch.Tensor,
    mix_images: torch.Tensor,
    coeffs: torch.Tensor,
    target: Target = "softmax",
    reduction: str = "mean",
) -> torch.Tensor:
    """MixDL's discriminator loss ``L_D^dist`` (without ``λ_D``).

    ``anchor_images [K, 3, H, W]`` and ``mix_images [B, 3, H, W]`` go through D as one ``K + B`` batch (as in
    the reference, so minibatch-stddev groups mix both), then through ``head``; the mixup rows are compared
    with the anchor rows as in :func:`mixup_distance_loss`.
    """
    k = anchor_images.shape[0]
    h = head(penultimate_features(discriminator, torch.cat([anchor_images, mix_images])))  # [K + B, P]
    return mixup_distance_loss(h[k:], h[:k], coeffs, target, reduction)


# ---------------------------------------------------------------------------------------------------------
# 3. MixDL as an add-on (hook) to the StyleGAN2 trainer
# ---------------------------------------------------------------------------------------------------------


@dataclass
class MixDLConfig:
    """MixDL's knobs (reference values in brackets).

    Attributes:
        alpha: Dirichlet concentration of the mixup coefficients [1.0 = uniform on the simplex].
        lambda_g: weight of the generator distance loss [1000].
        lambda_d: weight of the discriminator distance loss [1.0].
        mixup_every: every ``mixup_every``-th iteration is a mixup iteration [2].
        use_d: ``True`` = full MixDL (D alignment through the projection head, patch-level realism on mixup
            iterations); ``False`` = "MixDL-G only": the ordinary StyleGAN2 iteration plus the generator
            distance loss on mixup iterations.
        n_anchors: anchors (= mixups) per mixup iteration; ``0`` = the training batch size [batch = 4].
        target: ``"softmax"`` (reference: ``softmax(c)``) or ``"coefficients"`` (the paper: ``c``).
        patch_resolution: side of the discriminator map judged patch by patch (``None``: CDC's
            :func:`~fewshot_lib.models.patch_discriminator.default_patch_resolution`).
    """

    alpha: float = 1.0
    lambda_g: float = 1000.0
    lambda_d: float = 1.0
    mixup_every: int = 2
    use_d: bool = True
    n_anchors: int = 0
    target: str = "softmax"
    patch_resolution: int | None = None

    def __post_init__(self) -> None:
        if self.mixup_every < 1:
            raise ValueError(f"mixup_every must be ≥ 1, got {self.mixup_every}")
        if self.lambda_g < 0 or self.lambda_d < 0:
            raise ValueError(f"lambda_g and lambda_d must be ≥ 0, got {self.lambda_g}, {self.lambda_d}")
        if self.n_anchors == 1 or self.n_anchors < 0:
            raise ValueError(f"n_anchors must be 0 (= batch) or ≥ 2, got {self.n_anchors}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        target_distribution(torch.ones(1, 2) / 2, self.target)  # validates the name

    def as_dict(self) -> dict:
        return asdict(self)


def synthesize(generator: nn.Module, w: torch.Tensor, return_features: bool = False):
    """``w [B, w_dim]`` → images ``[B, 3, H, W]`` (and, with ``return_features``, the per-layer feature list)."""
    out = generator(w, input_is_latent=True, return_features=return_features)
    return (out[0], out[-1]) if return_features else out[0]


class MixDLHook(GANHook):
    """MixDL added to :class:`fewshot_lib.train.GANTrainer` without copying its loop.

    On ordinary iterations nothing changes. On mixup iterations (``step % mixup_every == 0``):

    * ``g_extra``: ``λ_G · L_G^dist`` on ``n`` fresh anchors and their Dirichlet mixups (always), and, for full
      MixDL, the patch-level non-saturating loss of the mixup images;
    * full MixDL only — ``discriminate`` switches D to patch-level logits (real and generated images), and
      ``d_extra`` adds ``softplus(D_patch(x_mix))`` for the mixup images plus ``λ_D · L_D^dist`` through the
      projection head.

    **Difference from the reference schedule.** There, a mixup iteration *replaces* the ordinary fakes by the
    mixup images; the trainer's hooks can only *add* terms, so here the ordinary fakes stay (judged patch by
    patch, like the mixups) and the mixups come on top. Both variants ask mixups to be locally realistic
    and keep whole-image realism on the other iterations.

    The new discriminator parts (patch heads, projection head) are returned by ``d_modules`` so the trainer
    optimises them with D and checkpoints them. The loss components are appended to ``trainer.history``
    (``mixdl_g_dist``, ``mixdl_d_dist``, ``mixdl_d_mix``, ``mixdl_g_mix``).

    Args:
        discriminator: the trainer's StyleGAN2 ``Discriminator`` (shared, not copied).
        config: :class:`MixDLConfig`.
    """

    def __init__(self, discriminator: nn.Module, config: MixDLConfig | None = None) -> None:
        self.config = config or MixDLConfig()
        if not hasattr(discriminator, "final_linear"):
            raise ValueError(
                "discriminator must be a StyleGAN2 Discriminator (with final_linear): MixDL's "
                f"projection head reads its penultimate features; got {type(discriminator).__name__}"
            )
        self.discriminator = discriminator
        self.patch_d = PatchDiscriminator(discriminator, patch_resolution=self.config.patch_resolution)
        self.head = ProjectionHead(discriminator.final_linear[0].weight.shape[0])
        p = next(discriminator.parameters())
        self.patch_d.heads.to(p.device)
        self.head.to(p.device)

    # -- schedule ----------------------------------------------------------------------------------------
    def is_mixup_step(self, step: int) -> bool:
        return step % self.config.mixup_every == 0

    def _patch_step(self, step: int) -> bool:
        return self.config.use_d and self.is_mixup_step(step)

    def _draw(self, trainer: GANTrainer, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Coefficients ``[n, n]`` and anchor latents ``w [n, w_dim]`` (z drawn on the trainer's CPU generator)."""
        c = dirichlet_coefficients(n, n, self.config.alpha, trainer.gen).to(trainer.device)
        z = torch.randn(n, trainer.G.style_dim, generator=trainer.gen).to(trainer.device)
        return c, trainer.G.mapping(z)

    def _n(self, trainer: GANTrainer) -> int:
        return self.config.n_anchors or max(2, trainer.cfg.batch)

    # -- GANHook -----------------------------------------------------------------------------------------
    def _follow(self, device: torch.device) -> None:
        """Keep the added modules on the discriminator's device (the trainer moves D, not the hook)."""
        if self.head.linear.weight.device != device:
            self.patch_d.heads.to(device)
            self.head.to(device)

    def discriminate(self, D: nn.Module, images: torch.Tensor, step: int, phase: str) -> torch.Tensor:
        """``[B, 1]`` image logits, or ``[B, 1, h, w]`` patch logits on full-MixDL mixup iterations."""
        if self._patch_step(step):
            self._follow(images.device)
            return self.patch_d(images, mode="patch")
        return D(images)

    def d_extra(self, ctx: StepContext) -> torch.Tensor | None:
        if not self._patch_step(ctx.step):
            return None
        tr = ctx.trainer
        self._follow(tr.device)
        n = self._n(tr)
        with torch.no_grad():
            c, w = self._draw(tr, n)
            x_anchor = synthesize(tr.G, w)  # [n, 3, H, W]
            x_mix = synthesize(tr.G, mix_latents(w, c))  # [n, 3, H, W]
        d_mix = F.softplus(self.patch_d(tr.augment(x_mix), mode="patch")).mean()
        d_dist = discriminator_distance_loss(
            self.discriminator, self.head, x_anchor, x_mix, c, self.config.target
        )
        tr._log(mixdl_d_mix=d_mix.item(), mixdl_d_dist=d_dist.item())
        return d_mix + self.config.lambda_d * d_dist

    def g_extra(self, ctx: StepContext) -> torch.Tensor | None:
        if not self.is_mixup_step(ctx.step):
            return None
        tr = ctx.trainer
        n = self._n(tr)
        c, w = self._draw(tr, n)
        total = torch.zeros((), device=tr.device)
        if self.config.use_d:
            x_mix = synthesize(tr.G, mix_latents(w, c))
            g_mix = F.softplus(-self.patch_d(tr.augment(x_mix), mode="patch")).mean()
            tr._log(mixdl_g_mix=g_mix.item())
            total = total + g_mix
            # the distance term uses the same coefficients on new anchors, as the reference
            w = tr.G.mapping(torch.randn(n, tr.G.style_dim, generator=tr.gen).to(tr.device))
        if self.config.lambda_g > 0:
            _, anchor_feats = synthesize(tr.G, w, return_features=True)  # list of [n, C_l, H_l, W_l]
            _, mix_feats = synthesize(tr.G, mix_latents(w, c), return_features=True)
            layers = sample_mixup_layers(n, len(anchor_feats), tr.gen)
            g_dist = generator_distance_loss(mix_feats, anchor_feats, c, layers, self.config.target)
            tr._log(mixdl_g_dist=g_dist.item())
            total = total + self.config.lambda_g * g_dist
        return total

    def d_modules(self) -> list[nn.Module]:
        return [self.patch_d.heads, self.head] if self.config.use_d else []

    def state_dict(self) -> dict:
        return {"config": self.config.as_dict()}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("config")
        if saved and saved != self.config.as_dict():
            raise ValueError(
                f"checkpoint was trained with MixDL config {saved}, this hook has {self.config.as_dict()}"
            )


# ---------------------------------------------------------------------------------------------------------
# 4. The variants of notebook 05, trained from scratch on k shots (their evaluation is
#    fewshot_lib.metrics.generator; the seeds x variants protocol is fewshot_lib.experiments)
# ---------------------------------------------------------------------------------------------------------

VARIANTS = ("stylegan2", "diffaugment", "mixdl_g", "mixdl")
"""Plain StyleGAN2; + DiffAugment; + MixDL's generator loss only; full MixDL (G loss, D alignment, patches)."""

DIFFAUGMENT_POLICY = "color,translation,cutout"


def variant_hook(
    variant: str, discriminator: nn.Module, config: MixDLConfig | None = None
) -> tuple[MixDLHook | None, str | None]:
    """``(hook, augmentation policy)`` for one of :data:`VARIANTS`.

    The MixDL variants use no augmentation, as the reference ``train_mixdl.py`` (its ADA is off by default),
    so that each one changes a single thing relative to plain StyleGAN2.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "stylegan2":
        return None, None
    if variant == "diffaugment":
        return None, DIFFAUGMENT_POLICY
    base = asdict(config or MixDLConfig())
    base["use_d"] = variant == "mixdl"
    return MixDLHook(discriminator, MixDLConfig(**base)), None


def train_variant(
    variant: str,
    shots: torch.Tensor,
    model_kwargs: dict,
    train_config: TrainConfig,
    mixdl_config: MixDLConfig | None = None,
    device: str | torch.device = "cpu",
    sample_callback=None,
    show_progress: bool = True,
) -> GANTrainer:
    """Build a fresh G/D (seeded by ``train_config.seed``) and train one variant on ``shots [k, 3, H, W]``.

    ``model_kwargs`` go to both :class:`Generator` (``size``, ``style_dim``, ``n_mlp``, ``channel_base``,
    ``channel_max``) and, where they apply, :class:`Discriminator`. Returns the trainer (``trainer.g_ema`` is
    the model to evaluate, ``trainer.history`` the losses, ``trainer.seconds`` the training time).
    ``sample_callback(step, images)`` also receives the untrained generator's samples at step 0.
    """
    torch.manual_seed(train_config.seed)
    g = Generator(**model_kwargs)
    d_kwargs = {
        k: v
        for k, v in model_kwargs.items()
        if k in ("size", "channel_base", "channel_max", "channel_multiplier")
    }
    d = Discriminator(**d_kwargs).to(device)
    hook, policy = variant_hook(variant, d, mixdl_config)
    cfg = TrainConfig(**{**asdict(train_config), "augment": policy})
    trainer = GANTrainer(g, d, shots, cfg, device=device, hook=hook, sample_callback=sample_callback)
    if sample_callback is not None:
        sample_callback(0, trainer.sample_images())
    trainer.train(show_progress=show_progress)
    return trainer


# ---------------------------------------------------------------------------------------------------------
# 5. The task and the shipped "staircase vs ramp" generators (measured by metrics.generator.memorisation_metrics)
# ---------------------------------------------------------------------------------------------------------

LAB_MODEL = dict(size=32, style_dim=64, n_mlp=2, channel_base=32 * 32, channel_max=32)
"""The small StyleGAN2 of notebook 05's lab profile (97 k generator parameters), also used by the showcase."""

SHOWCASE_VARIANTS = ("stylegan2", "mixdl")
"""The two generators trained long by ``scripts/train_mixdl_showcase.py``: the paper's over-fitted baseline
(plain StyleGAN2, no augmentation) and full MixDL, on the same shots with the same model."""


def category_task(
    style: str = "noto",
    category: str = "Smileys & Emotion",
    n_shots: int = 10,
    seed: int = 0,
    min_reference: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Notebook 05's few-shot task: ``n_shots`` seeded images of one style's category, the rest as reference.

    Returns ``(shots [n_shots, 3, 32, 32], reference [N - n_shots, 3, 32, 32])`` in ``[-1, 1]``. The shots are
    the first ``n_shots`` of a permutation seeded by ``seed``, so a different seed is a different task. Raises
    ``ValueError`` naming the style/category when fewer than ``min_reference`` images would remain for FID.
    """
    from ..data.emoji import load_emoji

    images = load_emoji().select(styles=style, categories=category).tensors()  # [N, 3, 32, 32]
    if len(images) - n_shots < min_reference:
        raise ValueError(
            f"{style}/{category} has {len(images)} images, leaving {len(images) - n_shots} for the "
            f"reference set; pick a category with at least {n_shots + min_reference} images "
            "(see load_emoji().select(styles=...).counts('category'))"
        )
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[perm[:n_shots]], images[perm[n_shots:]]


def showcase_name(variant: str, seed: int = 0) -> str:
    """File stem of a shipped showcase generator: ``mixdl_showcase_<variant>`` for seed 0 (the first one
    shipped) and ``mixdl_showcase_<variant>_seed<N>`` for seed ``N >= 1`` (its own shots and training seed)."""
    if variant not in SHOWCASE_VARIANTS:
        raise ValueError(f"showcase variant must be one of {SHOWCASE_VARIANTS}, got {variant!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"showcase seed must be an int >= 0, got {seed!r}")
    return f"mixdl_showcase_{variant}" + (f"_seed{seed}" if seed else "")


def parse_showcase_name(name: str) -> tuple[str, int] | None:
    """``(variant, seed)`` of a showcase export name (inverse of :func:`showcase_name`), ``None`` otherwise."""
    parsed = artifacts.parse_showcase(name)  # the naming rule lives with the registry
    return parsed if parsed and parsed[0] in SHOWCASE_VARIANTS else None


def shipped_showcase_seeds(variant: str | None = None, min_steps: int = 0) -> list[int]:
    """The seeds whose showcase generator ships in ``data/checkpoints`` now, for ``variant`` (or, with
    ``variant=None``, the seeds for which *every* variant ships: the complete StyleGAN2-vs-MixDL pairs), keeping
    those trained at least ``min_steps`` iterations. Load one with :func:`load_showcase_generator`."""
    variants = SHOWCASE_VARIANTS if variant is None else (variant,)
    for v in variants:
        showcase_name(v)  # validates
    found: dict[str, set[int]] = {v: set() for v in variants}
    for n in artifacts.names():
        if (parsed := parse_showcase_name(n)) and parsed[0] in found:
            if artifacts.get(n).available() and (
                not min_steps or artifacts.manifest(n).get("steps", 0) >= min_steps
            ):
                found[parsed[0]].add(parsed[1])
    return sorted(set.intersection(*found.values()))


SHOWCASE_BAR_KEYS = ("copy_fraction", "max_step_share")
"""The quality bar of the showcase (issue #16): MixDL has fewer near-copies of its shots and a smaller largest
step share of its latent walks than plain StyleGAN2, on each seed, over the last quarter of training."""


def trajectory_tail(trajectory: list[dict], keys: Sequence[str], fraction: float = 0.25) -> dict[str, Any]:
    """The mean of each of ``keys`` over the last ``fraction`` of a training trajectory: the entries (``{"step",
    key: value, ...}``, as ``scripts/train_mixdl_showcase.py`` records them every few hundred iterations) whose
    step is at least ``(1 - fraction)`` × the last step. Judging the trajectory's last quarter rather than its last
    point keeps one lucky or unlucky measurement from deciding. Returns ``{key: mean, "steps": [steps used]}``."""
    if not trajectory:
        raise ValueError("trajectory_tail: the trajectory is empty (no measurement was recorded)")
    if not 0 < fraction <= 1:
        raise ValueError(f"trajectory_tail: fraction must be in (0, 1], got {fraction!r}")
    last = max(e["step"] for e in trajectory)
    tail = [e for e in trajectory if e["step"] >= (1 - fraction) * last]
    return {**{k: float(np.mean([e[k] for e in tail])) for k in keys}, "steps": [e["step"] for e in tail]}


def showcase_bar(
    manifests: dict[str, dict], min_steps: int = 10_000, fraction: float = 0.25
) -> dict[str, Any]:
    """Issue #16's bar for one seed's shipped pair ``{"stylegan2": manifest, "mixdl": manifest}``: both trained
    at least ``min_steps`` iterations, and over the last ``fraction`` of their recorded trajectories MixDL has a
    lower mean share of near-copies (``copy_fraction``) and a lower mean largest-step share (``max_step_share``)
    than StyleGAN2. Returns the tails (:func:`trajectory_tail`), each criterion and ``met`` (all of them)."""
    tails = {
        v: trajectory_tail(m["memorisation_trajectory"], SHOWCASE_BAR_KEYS, fraction)
        for v, m in manifests.items()
    }
    out: dict[str, Any] = {
        "tails": tails,
        "steps": {v: m["steps"] for v, m in manifests.items()},
        "long_enough": all(m["steps"] >= min_steps for m in manifests.values()),
        "fewer_near_copies": tails["mixdl"]["copy_fraction"] < tails["stylegan2"]["copy_fraction"],
        "smaller_largest_step": tails["mixdl"]["max_step_share"] < tails["stylegan2"]["max_step_share"],
    }
    out["met"] = out["long_enough"] and out["fewer_near_copies"] and out["smaller_largest_step"]
    return out


def load_showcase_generator(
    variant: str, device: str | torch.device = "cpu", seed: int = 0
) -> tuple[Generator, dict]:
    """The shipped long-trained generator of ``variant`` (on the shots of ``category_task(seed=seed)``) and its
    manifest (sha256 checked against it).

    Raises ``FileNotFoundError`` (with the command that trains it) when ``data/checkpoints`` does not hold it,
    and ``ValueError`` when the file does not match its manifest (``fewshot_lib.artifacts``).
    """
    name = showcase_name(variant, seed)
    return artifacts.load(name, device=device), artifacts.manifest(name)
