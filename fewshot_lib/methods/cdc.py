"""CDC — few-shot image generation via cross-domain correspondence (Ojha et al., CVPR 2021).

**The idea.** Fine-tuning a pretrained GAN on 10 images over-fits: after a few hundred steps the generator
draws (almost) only those 10 images. CDC keeps what the source generator knew — *how its samples relate to
each other* — while letting their appearance move to the target domain:

1. **Cross-domain distance consistency.** For a batch of latents ``z_1..z_N`` take a generator feature map
   of the frozen source G and of the adapted G. For every sample ``i`` the cosine similarities to the other
   samples, passed through a softmax, form a probability distribution ``p_i`` over "who am I close to".
   The loss is the KL divergence between the source's and the adapted generator's distributions. If
   sample 1 looked more like sample 2 than like sample 3 in the source domain, it must stay that way after
   adaptation — so different ``z`` keep producing *different* images, and the same ``z`` keeps producing
   *the corresponding* image (a smiling noto face → a smiling fluent face).
2. **Relaxed realism.** Ten real images only describe ten points of the target domain. CDC therefore asks
   for full-image realism only near ten fixed *anchor* latents (``z = anchor + σ·ε``), one iteration in four,
   and elsewhere only for *patch* realism: a small head on an intermediate discriminator feature map
   classifies every patch (:class:`PatchDiscriminator`).

**The reference code's behaviour, reproduced here** (see ``reference/methods_stylegan2_cdc_mixdl.md`` §4):

* distance consistency every G step on ``N = 4`` fresh latents (no style mixing); each sample ``i`` gets its
  own random generator layer ``l_i``; similarities over the flattened ``C·H·W`` feature; softmax with no
  temperature; ``nn.KLDivLoss(reduction="mean")(log p_adapted, p_source)``, i.e. ``KL(p_source ‖ p_adapted)``
  *summed* over rows and divided by ``N·(N-1)`` (every entry), times ``λ = 1000``. With the usual
  ``"batchmean"`` reduction (divide by ``N``) the same loss is ``λ' = λ/(N-1) = 333.3``.
* iteration ``i`` with ``i % 4 == 0`` is an *anchor* iteration (``z`` near one of ``k = 10`` fixed anchors,
  ``σ = 0.1``; image-level D); the other three use ordinary latents (style mixing 0.9) and the patch D.
* all of G (mapping included) and D are trained; the patch heads are trained with D.

**Where this implementation differs, on purpose.**

* *Patches at every resolution.* The reference keeps D feature maps that have 512 channels and a 32 or 16 px
  spatial size; below 64 px input none exists and its "patch" call silently returns image-level logits.
  Here the patch map is chosen by size (default :func:`~fewshot_lib.models.patch_discriminator.default_patch_resolution`: 32×32 at 256 px as in
  the reference, 16×16 at 32 px, where one logit sees a 12×12 region), so a 32 px model really is judged
  on patches.
* The patch map is the output of a whole discriminator block (after its residual sum); the reference taps
  the main branch just before the sum. The head is a linear 3×3 convolution; the reference's head ends in a
  leaky ReLU, which makes negative patch logits 5× smaller than positive ones for no stated reason.
* ``mode="image" | "patch"`` is an explicit argument (the reference and MixDL use opposite integer flags).
* The per-pair Python loops are one normalised matrix product.
* CDC runs as a hook (:class:`CDCHook`) of the project's one GAN loop, :class:`fewshot_lib.train.GANTrainer`,
  like the baselines in ``baselines.py``; G, G_ema and the frozen source all start from the source's EMA
  generator (the reference starts G from the raw ``g``).

Taught in: ``notebooks/04_cdc.ipynb``.
"""

from __future__ import annotations

import copy
import logging
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.helpers import generate_with_features
from ..models.patch_discriminator import PatchDiscriminator
from ..train import GANHook, GANTrainer, StepContext

log = logging.getLogger(__name__)

Reduction = Literal["mean", "batchmean", "sum", "none"]

# ---------------------------------------------------------------------------------------------------------
# 1. The building block: cosine similarity → softmax → KL   (also used by MixDL)
# ---------------------------------------------------------------------------------------------------------


def similarity_logits(features: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarities between flattened feature maps, the logits of CDC's and MixDL's distributions.

    * ``keys is None``: every sample against *every other* sample of the same batch (CDC). The diagonal
      (``cos = 1`` with itself) is removed: ``features [N, ...]`` → ``[N, N-1]``, row ``i`` lists
      ``cos(f_i, f_j)`` for ``j ≠ i`` in increasing ``j``.
    * ``keys [M, ...]``: every sample against every key (MixDL: a mixed image against its anchors):
      ``[N, M]``.

    Each sample is flattened over all its dimensions (``C·H·W`` for a feature map), as in both reference
    implementations. One matrix product of unit vectors replaces their double Python loop.
    """
    if features.dim() < 2:
        raise ValueError(f"features must be [N, ...] with at least 2 dims, got shape {tuple(features.shape)}")
    f = F.normalize(features.flatten(1), dim=1)  # [N, P]
    if keys is None:
        n = f.shape[0]
        if n < 3:
            raise ValueError(
                f"similarity among samples needs a batch of at least 3 (got {n}): with 2 the "
                "softmax over the one other sample is always 1 and the loss is constant 0"
            )
        sims = f @ f.T  # [N, N]
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=f.device)
        return sims[off_diagonal].view(n, n - 1)  # [N, N-1]
    if keys.shape[1:].numel() != features.shape[1:].numel():
        raise ValueError(
            f"keys {tuple(keys.shape)} and features {tuple(features.shape)} must have the same "
            "number of elements per sample"
        )
    k = F.normalize(keys.flatten(1), dim=1)  # [M, P]
    return f @ k.T  # [N, M]


def similarity_kl(
    features: torch.Tensor,
    target_probs: torch.Tensor,
    keys: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """``KL(target ‖ softmax(cos-similarities of features))`` — the distance-consistency building block.

    ``p = softmax_j(similarity_logits(features, keys))`` is ``[N, M]`` (``M = N-1`` without keys);
    ``target_probs [N, M]`` are fixed probabilities (CDC: the source generator's ``p``; MixDL: the mixup
    coefficients). The result equals ``nn.KLDivLoss(reduction)(log p, target_probs)``:

    * ``"mean"``: ``Σ_ij t_ij (log t_ij − log p_ij) / (N·M)`` — what CDC and MixDL use, with λ = 1000;
    * ``"batchmean"``: ``Σ_ij … / N``, the textbook KL averaged over samples (= ``M`` × ``"mean"``);
    * ``"sum"``: ``Σ_ij …``;
    * ``"none"``: the per-row KL, ``[N]``.

    Gradients flow into ``features`` (and ``keys``) only; ``target_probs`` is treated as a constant.
    """
    return kl_from_logits(similarity_logits(features, keys), target_probs, reduction)


def kl_from_logits(
    logits: torch.Tensor, target_probs: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """``KL(target ‖ softmax(logits))`` row by row for ``logits, target_probs [N, M]``; reductions as in
    :func:`similarity_kl` (which is this function applied to cosine-similarity logits)."""
    log_p = F.log_softmax(logits, dim=1)  # [N, M]
    if target_probs.shape != log_p.shape:
        raise ValueError(
            f"target_probs must have shape {tuple(log_p.shape)} (one distribution per sample), "
            f"got {tuple(target_probs.shape)}"
        )
    t = target_probs.detach().to(log_p.dtype)
    per_entry = torch.xlogy(t, t) - t * log_p  # [N, M]; 0·log 0 = 0
    if reduction == "mean":
        return per_entry.mean()
    if reduction == "batchmean":
        return per_entry.sum() / per_entry.shape[0]
    if reduction == "sum":
        return per_entry.sum()
    if reduction == "none":
        return per_entry.sum(dim=1)
    raise ValueError(f"reduction must be 'mean', 'batchmean', 'sum' or 'none', got {reduction!r}")


def similarity_probs(features: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax_j`` of :func:`similarity_logits` — the distribution ``p_i`` over the other samples ``[N, M]``."""
    return F.softmax(similarity_logits(features, keys), dim=1)


def distance_consistency_loss(
    adapted_features: torch.Tensor, source_features: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """CDC's cross-domain distance consistency for one layer (without λ).

    ``adapted_features``, ``source_features``: ``[N, C, H, W]`` feature maps of the *same* latents from the
    adapted and the frozen source generator. Returns ``KL(p_source ‖ p_adapted)`` with the given reduction
    (``"mean"`` reproduces the reference; multiply by ``λ = 1000``). Zero when both generators agree,
    positive otherwise; no gradient reaches the source features.
    """
    if adapted_features.shape != source_features.shape:
        raise ValueError(
            f"adapted {tuple(adapted_features.shape)} and source {tuple(source_features.shape)} "
            "features must have the same shape (same latents, same layer)"
        )
    with torch.no_grad():
        target = similarity_probs(source_features)  # [N, N-1]
    return similarity_kl(adapted_features, target, reduction=reduction)


# ---------------------------------------------------------------------------------------------------------
# 2. Patch-level discriminator: a model, in fewshot_lib.models.patch_discriminator (imported above)
# ---------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------
# 3. Cross-domain distance consistency over generator layers
# ---------------------------------------------------------------------------------------------------------


def sample_layers(n: int, n_layers: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One random generator layer per sample, uniform over ``1..n_layers-1`` → ``[n]`` long.

    Layer 0 (the 4×4 constant-input conv) is never used, as in the reference (``randint(1, n_latent - 1)``).
    """
    if n_layers < 2:
        raise ValueError(f"need at least 2 generator feature layers, got {n_layers}")
    return torch.randint(1, n_layers, (n,), generator=generator)


def _mixed_layer_logits(features: list[torch.Tensor], layer_per_sample: torch.Tensor) -> torch.Tensor:
    """Row ``i`` = similarities of sample ``i`` to the others, all at layer ``l_i`` → ``[N, N-1]``."""
    rows: list[torch.Tensor | None] = [None] * len(layer_per_sample)
    for layer in layer_per_sample.unique().tolist():
        logits = similarity_logits(features[layer])  # [N, N-1] at this layer
        for i in torch.nonzero(layer_per_sample == layer).flatten().tolist():
            rows[i] = logits[i]
    return torch.stack(rows)  # [N, N-1]


def cross_domain_consistency(
    adapted_features: list[torch.Tensor],
    source_features: list[torch.Tensor],
    layer_per_sample: torch.Tensor | None = None,
    layers: list[int] | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """CDC's distance-consistency loss (without λ) from per-layer generator features of the same latents.

    ``adapted_features`` / ``source_features``: lists over generator layers of ``[N, C_l, H_l, W_l]``.
    Exactly one of

    * ``layer_per_sample [N]`` — the reference: row ``i`` of the similarity distributions uses layer ``l_i``
      (see :func:`sample_layers`); one KL over all rows;
    * ``layers`` — the paper's sum over a fixed list of layers, ``Σ_l KL_l``.

    ``reduction="mean"`` with ``λ = 1000`` reproduces the reference.
    """
    if len(adapted_features) != len(source_features):
        raise ValueError(
            f"got {len(adapted_features)} adapted and {len(source_features)} source feature layers"
        )
    if (layer_per_sample is None) == (layers is None):
        raise ValueError("pass exactly one of layer_per_sample (the reference) or layers (a fixed list)")
    if layers is not None:
        return sum(
            distance_consistency_loss(adapted_features[k], source_features[k], reduction) for k in layers
        )
    n = adapted_features[0].shape[0]
    if layer_per_sample.shape != (n,):
        raise ValueError(f"layer_per_sample must have shape [{n}], got {tuple(layer_per_sample.shape)}")
    with torch.no_grad():
        target = F.softmax(_mixed_layer_logits(source_features, layer_per_sample), dim=1)  # [N, N-1]
    return kl_from_logits(_mixed_layer_logits(adapted_features, layer_per_sample), target, reduction)


# ---------------------------------------------------------------------------------------------------------
# 4. Anchor regions of the latent space
# ---------------------------------------------------------------------------------------------------------


class AnchorSampler:
    """``k`` fixed anchor latents; samples ``z = anchor_j + σ·ε`` near a random anchor (CDC's relaxed realism).

    The anchors are random ``z`` drawn once per run (not inversions of the training images, and not paired
    with them). Only latents from these small regions are asked to produce *whole* images that look like the
    ten targets; everywhere else only patches must look real.

    Args:
        k: number of anchors (the reference uses the number of shots, 10).
        z_dim: latent size.
        sigma: neighbourhood std (reference default 0.1; some of its runs use 0.05).
        generator: seeded CPU generator for the anchors.
    """

    def __init__(
        self, k: int, z_dim: int, sigma: float = 0.1, generator: torch.Generator | None = None
    ) -> None:
        if k < 1 or z_dim < 1:
            raise ValueError(f"k and z_dim must be ≥ 1, got k={k}, z_dim={z_dim}")
        if sigma < 0:
            raise ValueError(f"sigma must be ≥ 0, got {sigma}")
        self.anchors = torch.randn(k, z_dim, generator=generator)  # [k, z_dim], CPU
        self.sigma = float(sigma)

    @classmethod
    def from_anchors(cls, anchors: torch.Tensor, sigma: float = 0.1) -> "AnchorSampler":
        """A sampler around given anchors ``[k, z_dim]`` (e.g. restored from a checkpoint)."""
        if anchors.dim() != 2:
            raise ValueError(f"anchors must be [k, z_dim], got shape {tuple(anchors.shape)}")
        sampler = cls(1, 1, sigma)
        sampler.anchors = anchors.detach().cpu().clone()
        return sampler

    def sample(
        self, batch: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` latents near anchors chosen with replacement → ``(z [batch, z_dim], anchor_index [batch])``."""
        idx = torch.randint(0, len(self.anchors), (batch,), generator=generator)
        z = self.anchors[idx] + self.sigma * torch.randn(batch, self.anchors.shape[1], generator=generator)
        return z, idx


# ---------------------------------------------------------------------------------------------------------
# 5. CDC as a hook of the shared GAN trainer
# ---------------------------------------------------------------------------------------------------------


class CDCHook(GANHook):
    """CDC's pieces for :class:`fewshot_lib.train.GANTrainer` (build it with ``baselines.make_adapter("cdc", ...)``).

    Iteration ``i`` (reference defaults in brackets):

    * ``i % image_every == 0`` [4] — *anchor step*: the adversarial latents are ``z = anchor + σ·ε`` near one of
      ``n_anchors`` [10] fixed anchors (``σ = anchor_sigma`` [0.1], no style mixing), judged by the
      image-level D (``[B, 1]`` logits);
    * otherwise — *patch step*: ordinary latents (the trainer's style mixing), judged by the patch D
      (``[B, 1, h, w]``);
    * every step: ``kl_weight · cross_domain_consistency`` [1000] on ``feat_batch`` [4] fresh latents is
      added to G's loss (logged as ``dist``).

    R1 stays on the image-level D (the trainer calls ``D`` directly; in the reference R1 steps are always
    anchor steps too). The path-length batch uses ordinary latents, as in the reference.

    Args:
        source_generator: the source G (copied and frozen: the target of the distance consistency).
        discriminator: the trainer's D (shared, *not* copied: the patch heads sit on its feature maps).
        layer_mode: ``"random"`` (a random layer per sample, the reference) or ``"all"`` (the paper's sum over
            every layer but the 4×4 one).
        reduction: KL reduction [``"mean"``] — see :func:`similarity_kl` for the λ it implies.
        patch_resolution, n_heads: see :class:`PatchDiscriminator` (0/None = default resolution).
    """

    def __init__(
        self,
        source_generator: nn.Module,
        discriminator: nn.Module,
        kl_weight: float = 1000.0,
        feat_batch: int = 4,
        layer_mode: str = "random",
        reduction: Reduction = "mean",
        n_anchors: int = 10,
        anchor_sigma: float = 0.1,
        image_every: int = 4,
        patch_resolution: int | None = None,
        n_heads: int = 1,
        device: str | torch.device = "cpu",
    ) -> None:
        if layer_mode not in ("random", "all"):
            raise ValueError(f"layer_mode must be 'random' or 'all', got {layer_mode!r}")
        if image_every < 1:
            raise ValueError(f"image_every must be ≥ 1, got {image_every}")
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be ≥ 0, got {kl_weight}")
        self.device = torch.device(device)
        self.source = copy.deepcopy(source_generator).to(self.device).eval().requires_grad_(False)
        self.patch_d = PatchDiscriminator(
            discriminator, patch_resolution=patch_resolution or None, n_heads=n_heads
        ).to(self.device)
        self.kl_weight, self.feat_batch, self.layer_mode, self.reduction = (
            kl_weight,
            feat_batch,
            layer_mode,
            reduction,
        )
        self.n_anchors, self.anchor_sigma, self.image_every = n_anchors, anchor_sigma, image_every
        self.anchors: AnchorSampler | None = None  # drawn from the trainer's seeded generator at step 0
        self._head = (-1, 0)  # (step, head) — one head per iteration

    def is_image_step(self, step: int) -> bool:
        return step % self.image_every == 0

    def sample_z(self, trainer: GANTrainer, step: int, batch: int) -> list[torch.Tensor] | None:
        if self.anchors is None:
            self.anchors = AnchorSampler(self.n_anchors, trainer.G.style_dim, self.anchor_sigma, trainer.gen)
        if not self.is_image_step(step) or batch != trainer.cfg.batch:  # patch step, or the path-length batch
            return None
        return [self.anchors.sample(batch, trainer.gen)[0].to(self.device)]

    def head_for(self, step: int) -> int:
        if self._head[0] != step:
            self._head = (step, int(torch.randint(0, len(self.patch_d.heads), ())))
        return self._head[1]

    def discriminate(self, D: nn.Module, images: torch.Tensor, step: int, phase: str) -> torch.Tensor:
        if self.is_image_step(step):
            return self.patch_d(images, mode="image")  # [B, 1]
        return self.patch_d(images, mode="patch", head=self.head_for(step))  # [B, 1, h, w]

    def d_modules(self) -> list[nn.Module]:
        return [self.patch_d.heads]

    def distance_loss(self, G: nn.Module, generator: torch.Generator | None = None) -> torch.Tensor:
        """``cross_domain_consistency`` (without λ) between ``G`` and the source on ``feat_batch`` fresh latents.

        The two passes draw independent noise maps, as in the reference.
        """
        z = torch.randn(self.feat_batch, self.source.style_dim, generator=generator).to(self.device)
        with torch.no_grad():
            _, source_feats = generate_with_features(self.source, z)
        _, adapted_feats = generate_with_features(G, z)
        if self.layer_mode == "all":
            return cross_domain_consistency(
                adapted_feats,
                source_feats,
                layers=list(range(1, len(adapted_feats))),
                reduction=self.reduction,
            )
        layer_per_sample = sample_layers(self.feat_batch, len(adapted_feats), generator)
        return cross_domain_consistency(
            adapted_feats, source_feats, layer_per_sample=layer_per_sample, reduction=self.reduction
        )

    def g_extra(self, ctx: StepContext) -> torch.Tensor | None:
        if self.kl_weight == 0:
            return None
        loss = self.kl_weight * self.distance_loss(ctx.trainer.G, ctx.trainer.gen)
        ctx.trainer._log(dist=loss.item())
        return loss

    def state_dict(self) -> dict:
        return {"anchors": self.anchors.anchors if self.anchors is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("anchors") is not None:
            self.anchors = AnchorSampler.from_anchors(state["anchors"], self.anchor_sigma)
