"""Few-shot adaptation of a pretrained StyleGAN2: the classic baselines, set-up shared with CDC, evaluation.

Every adaptation method here starts from a generator/discriminator pair trained on a large *source* domain
(here: all noto emoji) and continues training on ``k ≈ 10`` *target* images. They all run on the project's
one GAN loop, :class:`fewshot_lib.train.GANTrainer` (StyleGAN2 losses, lazy R1, path-length regularisation,
style mixing, G EMA), and differ only in what they plug into it:

==================  ================================================================================
method              what changes
==================  ================================================================================
TGAN                nothing — plain fine-tuning of G and D (Wang et al., "Transferring GANs", 2018)
FreezeD             the first ``n`` discriminator blocks (FromRGB and the high-resolution blocks, the
                    "low-level" features) keep their source weights (Mo et al., 2020): only the later
                    blocks and the epilogue re-learn
EWC (optional)      a quadratic penalty pulling G's weights towards the source, weighted by each weight's
                    (diagonal) Fisher information (Li et al., "Few-shot image generation with EWC", 2020)
CDC                 ``cdc.CDCHook``: distance consistency on G, anchors and a patch-level D
==================  ================================================================================

:func:`make_adapter` builds the trainer for any of them from the same source models, shots and
:func:`adaptation_config`, so differences in the results come from the method alone.
:class:`AdaptationEvaluator` scores the adapted generators identically.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
import torch.nn as nn

from .. import artifacts
from ..models.helpers import generate, generate_with_features  # noqa: F401  (notebook 04 imports them from here)
from ..train import GANHook, GANTrainer, StepContext, TrainConfig

log = logging.getLogger(__name__)

METHODS = ("tgan", "freezed", "ewc", "cdc")


def adaptation_config(steps: int, batch: int = 4, seed: int = 0, **overrides) -> TrainConfig:
    """:class:`~fewshot_lib.train.TrainConfig` for few-shot adaptation, the CDC reference's settings.

    Batch 4, lr 0.002, R1 γ = 10 every 16 steps, path length 2 every 4, style mixing 0.9, horizontal flips of
    the shots, no augmentation (the reference's default). The G EMA half-life is a tenth of the run's images
    (the reference's ``0.5^(32/10000)`` per step is a 312-step half-life, too slow for a short CPU run: the EMA
    generator would still be mostly the source).
    """
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    values = dict(
        steps=steps,
        batch=batch,
        seed=seed,
        lr=0.002,
        r1_gamma=10.0,
        r1_every=16,
        pl_weight=2.0,
        pl_every=4,
        mixing=0.9,
        xflip=True,
        augment=None,
        ema_half_life_images=max(steps * batch / 10, 1.0),
        sample_every=0,
        checkpoint_every=0,
        n_sample=16,
    )
    values.update(overrides)
    return TrainConfig(**values)


# ---------------------------------------------------------------------------------------------------------
# FreezeD and EWC
# ---------------------------------------------------------------------------------------------------------


def frozen_block_parameters(discriminator: nn.Module, n_blocks: int) -> list[str]:
    """Names of the parameters in ``discriminator.convs[:n_blocks]`` (FromRGB, then the highest resolutions)."""
    if n_blocks < 0:
        raise ValueError(f"n_blocks must be ≥ 0, got {n_blocks}")
    if not hasattr(discriminator, "convs"):
        raise ValueError(f"{type(discriminator).__name__} has no .convs blocks to freeze")
    if n_blocks >= len(discriminator.convs):
        raise ValueError(
            f"cannot freeze {n_blocks} blocks: the discriminator has {len(discriminator.convs)} "
            "(leave at least one block and the epilogue trainable)"
        )
    return [
        f"convs.{i}.{name}" for i in range(n_blocks) for name, _ in discriminator.convs[i].named_parameters()
    ]


def freeze_discriminator(trainer: GANTrainer, n_blocks: int) -> list[str]:
    """FreezeD: rebuild ``trainer.d_optim`` without the first ``n_blocks`` D blocks; returns their names.

    The frozen weights are simply not in D's optimiser, so nothing the loss or R1 does can move them (both still
    flow *through* them). ``requires_grad`` is left alone: the trainer keeps each parameter's own flag.
    """
    frozen = set(frozen_block_parameters(trainer.D, n_blocks))
    keep = [p for name, p in trainer.D.named_parameters() if name not in frozen]
    keep += [p for m in trainer.hook.d_modules() for p in m.parameters()]
    group = trainer.d_optim.param_groups[0]
    trainer.d_optim = torch.optim.Adam(keep, lr=group["lr"], betas=group["betas"], eps=group["eps"])
    return sorted(frozen)


class EWCHook(GANHook):
    """EWC: ``g_extra = weight · Σ_θ F_θ (θ − θ_source)²`` with the diagonal Fisher ``F`` of the source G.

    ``F_θ = E_z[(∂ L_G / ∂θ)²]`` is estimated once, at the source weights, from the source D's generator loss
    on ``n_batches`` batches of latents — weights the source's realism depends on most move least.
    """

    def __init__(self, weight: float, n_batches: int = 4) -> None:
        if weight <= 0:
            raise ValueError(f"EWC weight must be > 0, got {weight}")
        self.weight, self.n_batches = float(weight), n_batches
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def estimate_fisher(self, trainer: GANTrainer) -> None:
        G, D = trainer.G, trainer.D
        params = dict(G.named_parameters())
        self.anchor = {n: p.detach().clone() for n, p in params.items()}
        self.fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        for _ in range(self.n_batches):
            z = torch.randn(trainer.cfg.batch, G.style_dim, generator=trainer.gen).to(trainer.device)
            loss = nn.functional.softplus(-D(generate(G, z))).mean()
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (n, _), g in zip(params.items(), grads):
                if g is not None:
                    self.fisher[n] += g.detach().pow(2) / self.n_batches

    def penalty(self, G: nn.Module) -> torch.Tensor:
        return sum((self.fisher[n] * (p - self.anchor[n]).pow(2)).sum() for n, p in G.named_parameters())

    def g_extra(self, ctx: StepContext) -> torch.Tensor:
        if not self.fisher:
            self.estimate_fisher(ctx.trainer)
        value = self.weight * self.penalty(ctx.trainer.G)
        ctx.trainer._log(ewc=value.item())
        return value


# ---------------------------------------------------------------------------------------------------------
# One constructor for every method
# ---------------------------------------------------------------------------------------------------------


def make_adapter(
    method: str,
    generator: nn.Module,
    discriminator: nn.Module,
    shots: torch.Tensor,
    config: TrainConfig,
    device: str | torch.device = "cpu",
    freeze_d: int = 2,
    ewc_weight: float = 5e8,
    **cdc_options,
) -> GANTrainer:
    """A :class:`~fewshot_lib.train.GANTrainer` that adapts copies of the source models to ``shots``.

    Args:
        method: ``"tgan"``, ``"freezed"``, ``"ewc"`` or ``"cdc"``.
        generator, discriminator: the source models (copied; never modified). The generator should be the
            source's EMA generator; it starts G, G_ema and (for CDC) the frozen source copy.
        shots: the ``k`` target images ``[k, 3, H, W]`` in [-1, 1].
        config: e.g. :func:`adaptation_config`.
        freeze_d: FreezeD's number of frozen D blocks; ``ewc_weight``: EWC's penalty weight.
        cdc_options: keyword arguments of :class:`~.cdc.CDCHook` (``kl_weight``, ``n_anchors``, ...).

    ``trainer.hook.method`` names the method; ``trainer.frozen`` lists FreezeD's frozen parameters.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(shots, torch.Tensor) or shots.dim() != 4 or shots.shape[1] != 3 or len(shots) == 0:
        raise ValueError(
            f"shots must be images [k, 3, H, W] with k ≥ 1, got "
            f"{tuple(shots.shape) if isinstance(shots, torch.Tensor) else type(shots).__name__}"
        )
    if cdc_options and method != "cdc":
        raise ValueError(f"options {sorted(cdc_options)} are CDC's; method is {method!r}")
    device = torch.device(device)
    G = copy.deepcopy(generator).to(device)
    D = copy.deepcopy(discriminator).to(device)
    if method == "cdc":
        from .cdc import CDCHook

        hook: GANHook = CDCHook(generator, D, device=device, **cdc_options)
    elif method == "ewc":
        hook = EWCHook(ewc_weight)
    else:
        hook = GANHook()
    hook.method = method
    trainer = GANTrainer(G, D, shots, config, device=device, hook=hook, g_ema=copy.deepcopy(generator))
    trainer.frozen = freeze_discriminator(trainer, freeze_d) if method == "freezed" else []
    return trainer


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
        style: the target's emoji style (e.g. ``"fluent_3d"``): the scores then include ``style_share``, the
            share of samples the emoji network's style head assigns to it (:func:`fewshot_lib.metrics.style`);
            ``None`` (your own image folder, or an extractor without the style head): no such score.
    """

    def __init__(
        self,
        source: nn.Module,
        z: torch.Tensor,
        shots: torch.Tensor,
        target_real: torch.Tensor,
        source_gallery: torch.Tensor | None = None,
        source_labels=None,
        target_gallery: torch.Tensor | None = None,
        target_labels=None,
        extractor: str = "emoji",
        device: str | torch.device = "cpu",
        style: str | None = None,
    ) -> None:
        from ..metrics.result import resolve_extractor

        self.device = torch.device(device)
        self.style = style
        self.ext = resolve_extractor(extractor, self.device)
        quiet = dict(show_progress=False)
        self.target_features = self.ext.features(target_real, **quiet)
        self.has_labels = source_gallery is not None and target_gallery is not None
        if self.has_labels and (source_labels is None or target_labels is None):
            raise ValueError("source_gallery and target_gallery need source_labels and target_labels")
        self.source_gallery = self.ext.features(source_gallery, **quiet) if self.has_labels else None
        self.target_gallery = None
        if self.has_labels:  # usually the same images as target_real: do not extract them twice
            self.target_gallery = (
                self.target_features
                if target_gallery is target_real
                else self.ext.features(target_gallery, **quiet)
            )
        self.source_labels, self.target_labels = source_labels, target_labels
        self._set_latents_and_shots(source, z, shots)

    def _set_latents_and_shots(self, source: nn.Module, z: torch.Tensor, shots: torch.Tensor) -> None:
        self.z, self.shots = z.cpu(), shots.cpu()
        self.shot_embedding = self.ext.distance_embedding(self.shots, show_progress=False)
        self.source_images = self.generate(source)  # [N, 3, H, W]
        self.source_features = self.ext.features(self.source_images, show_progress=False)

    def with_shots(self, source: nn.Module, z: torch.Tensor, shots: torch.Tensor) -> AdaptationEvaluator:
        """An evaluator for other latents and shots on the same real sets, whose features are not extracted
        again (one evaluator per shot set: notebook 04's shipped runs)."""
        other = copy.copy(self)
        other._set_latents_and_shots(source, z, shots)
        return other

    @torch.no_grad()
    def generate(self, generator: nn.Module) -> torch.Tensor:
        """``G(z)`` for the fixed latents → ``[N, 3, H, W]`` on the CPU (fresh noise maps)."""
        dev = next(generator.parameters()).device
        return torch.cat([generate(generator, zb.to(dev)).cpu() for zb in self.z.split(128)])

    def __call__(self, generator: nn.Module, images: torch.Tensor | None = None) -> dict[str, float]:
        """All scores of ``generator`` (or of precomputed ``images`` of the fixed latents) as plain floats."""
        from ..metrics.correspondence import correspondence_score
        from ..metrics.diversity import intra_cluster_lpips, nn_modes
        from ..metrics.fid import fid
        from ..metrics.recognisability import can_recognise, recognisability

        fake = self.generate(generator) if images is None else images
        emb = self.ext.distance_embedding(fake, show_progress=False)
        fake_features = self.ext.features(fake, show_progress=False)
        f = fid(self.target_features, fake_features, self.ext)
        icl = intra_cluster_lpips(emb, self.shot_embedding, self.ext)
        modes = nn_modes(emb, self.shot_embedding, self.ext)
        rec = (
            recognisability(
                self.target_features, fake, extractor=self.ext
            ).value  # vs the ledger's image floor
            if can_recognise(self.ext)
            else float("nan")
        )
        scores = {
            "fid": f.value,
            "recognisability": rec,
            "intra_cluster_lpips": icl.value,
            "nn_modes": float(modes.value),
            "nn_lpips": modes.details["nn_lpips"],
            "correspondence": float("nan"),
            "correspondence_chance": float("nan"),
        }
        if self.has_labels:
            corr = correspondence_score(
                self.source_features,
                fake_features,
                self.source_gallery,
                self.source_labels,
                self.target_gallery,
                self.target_labels,
                self.ext,
            )
            scores.update(correspondence=corr.value, correspondence_chance=corr.details["chance"])
        if self.style is not None:
            from ..metrics.style import style_share

            scores["style_share"] = style_share(fake, self.style, self.ext).value
        return scores

    @property
    def extractor_name(self) -> str:
        return self.ext.name


def run_adaptation(
    method: str,
    generator: nn.Module,
    discriminator: nn.Module,
    shots: torch.Tensor,
    config: TrainConfig,
    device: str | torch.device = "cpu",
    evaluator: AdaptationEvaluator | None = None,
    eval_every: int = 0,
    show_progress: bool = True,
    **method_options,
) -> tuple[GANTrainer, list[dict[str, float]]]:
    """Seed everything with ``config.seed``, adapt for ``config.steps`` iterations, evaluate along the way.

    Returns ``(trainer, curve)``; ``trainer.g_ema`` is the adapted generator and ``curve`` holds
    ``{"step": s, **evaluator(G_ema)}`` at step 0 and every ``eval_every`` steps (empty without an evaluator
    or with ``eval_every=0``). ``method_options`` go to :func:`make_adapter`.
    """
    from ..config import seed_everything

    seed_everything(config.seed)
    trainer = make_adapter(method, generator, discriminator, shots, config, device, **method_options)
    curve: list[dict[str, float]] = []
    checkpoints = (
        list(range(eval_every, config.steps, eval_every)) if evaluator is not None and eval_every > 0 else []
    )
    if evaluator is not None and eval_every > 0:
        curve.append({"step": 0, **evaluator(trainer.g_ema)})
    for stop in checkpoints + [config.steps]:
        trainer.train(stop, resume=False, show_progress=show_progress)
        if evaluator is not None and eval_every > 0:
            curve.append({"step": trainer.step, **evaluator(trainer.g_ema)})
    return trainer, curve


# ---------------------------------------------------------------------------------------------------------
# The shipped source discriminator (notebook 04 reads it from here; it lives in fewshot_lib.artifacts)
# ---------------------------------------------------------------------------------------------------------


def source_discriminator_paths(name: str = "stylegan2_noto32") -> tuple[Path, Path]:
    """``data/checkpoints/<name>_d.pt`` and its manifest ``<name>_d.manifest.json``."""
    return artifacts.source_model_paths(f"{name}_d")


def load_source_discriminator(
    name: str = "stylegan2_noto32", device: str | torch.device = "cpu", verify: bool = True
) -> nn.Module:
    """The discriminator trained together with the shipped source generator ``name`` (float32, eval mode):
    ``fewshot_lib.artifacts.load(name + "_d")``, which warns when the two are from different steps."""
    return artifacts.load_source_discriminator(name, device=device, verify=verify)
