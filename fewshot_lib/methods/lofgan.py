"""LoFGAN training: losses, one training step, a small resumable loop, generation, emoji episode classes.

One iteration (the reference order) on one batch of episodes ``shots [B, k, 3, S, S]`` with labels ``y [B]``:

* **D step** — hinge on the real shots ``relu(1 - D(x))`` and on one fake per episode ``relu(1 + D(G(x)))``;
  ACGAN cross-entropy of the class head on the real shots; a gradient penalty ``w_gp · Σ‖∇_x s_y(x)‖² / B`` on
  the *true-class logit* (FUNIT's penalty, inherited by LoFGAN — not on the real/fake logit).
* **G step** — ``w_adv · -D(x̂) + w_cls · CE(class head(x̂), y) + w_recon · L_rec``.
  For LoFGAN ``L_rec`` is the **local reconstruction loss**: the fusion the LFM did on features is replayed on
  pixels of ``s×s`` thumbnails of the shots (``s`` = the feature map's side, so each feature position is one
  thumbnail pixel), and the fake's thumbnail must match that target (L1). For the global-fusion baseline it is
  L1 to the α-blended image ``Σ_k α_k x_k`` at full resolution.

Reference defaults (LoFGAN configs; all are :class:`LoFGANConfig` fields): Adam(lr 1e-4, betas (0.9, 0.999),
weight decay 1e-4) for G and D; LR constant for the first half, then linear decay to 0 (100k iterations:
decay from 50k); ``w_adv = 1``, ``w_cls = 1``, ``w_recon = 0.5``, ``w_gp = 10``, η = 0.5, batch 8 episodes,
k = 3, 128 px. The reference's ``set_detect_anomaly(True)`` is left out (it only slows training).

The reference down-samples with *nearest* (pixel subsampling) and hard-codes an 8×8 grid; here the grid
comes from the record's feature size, and ``recon_mode="area"`` (average pooling) is available as a variant.

Taught in: ``notebooks/06_lofgan.ipynb``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.fewshot import EpisodeSampler, class_split, class_tensors
from ..models.helpers import frozen
from ..models.lofgan import (
    FusionRecord,
    LoFGANDiscriminator,
    LoFGANGenerator,
    gather_shots,
    init_kaiming,
    input_gradients_only,
    local_replacement,
)
from .. import distributed
from ..train import AMP_DTYPES, ResumableTrainer, backward_and_step

log = logging.getLogger(__name__)

__all__ = [
    "LoFGANConfig",
    "thumbnails",
    "local_target",
    "local_reconstruction_loss",
    "global_reconstruction_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "class_loss",
    "class_logit_gradient_penalty",
    "lr_at",
    "make_optimizers",
    "d_step",
    "g_step",
    "train_step",
    "LoFGANTrainer",
    "generate",
    "episode_generate_fn",
    "emoji_episode_classes",
    "export_name",
    "shipped_exports",
]


@dataclass
class LoFGANConfig:
    """Hyper-parameters; defaults are the reference's (128 px, 100k iterations). Shrink for CPU runs."""

    size: int = 128
    feature_size: int = 8
    nf: int = 32  # G stem width
    nf_d: int = 64  # D stem width
    max_nf_d: int = 1024  # D width cap
    fusion: str = "local"  # "local" (LoFGAN) or "global" (baseline)
    rate: float = 0.5  # LFM selection rate eta
    k: int = 3  # shots per episode
    batch: int = 8  # episodes per step
    steps: int = 100_000
    decay_start: int = 50_000  # LR constant until here, then linear to 0 at `steps`
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    w_adv: float = 1.0
    w_cls: float = 1.0
    w_recon: float = 0.5
    w_gp: float = 10.0
    gp_every: int = 1  # apply the penalty every n-th D step, scaled by n (lazy, as StyleGAN2); reference: 1
    recon_mode: str = "nearest"  # thumbnail down-sampling for the local loss: "nearest" (reference) or "area"
    # GPU options (off by default, so CPU results stay bit-identical): mixed precision of the main G and D
    # passes ("bf16", or "fp16" with gradient scalers; the penalty's double backward stays float32) and the
    # NHWC memory layout of G and D (faster convolutions on tensor cores)
    amp: str = "none"
    channels_last: bool = False

    def __post_init__(self):
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"LoFGANConfig.amp={self.amp!r}: choose one of {sorted(AMP_DTYPES)}")


# ----------------------------------------------------------------------------------------------------------
# Reconstruction losses
# ----------------------------------------------------------------------------------------------------------


def thumbnails(images: torch.Tensor, grid: int, mode: str = "nearest") -> torch.Tensor:
    """``[..., 3, S, S] → [..., 3, grid, grid]``; ``nearest`` keeps one pixel per cell (the reference), ``area``
    averages the cell."""
    if mode not in ("nearest", "area"):
        raise ValueError(f"mode must be 'nearest' or 'area', got {mode!r}")
    lead = images.shape[:-3]
    x = F.interpolate(images.reshape(-1, *images.shape[-3:]), size=(grid, grid), mode=mode)
    return x.view(*lead, *x.shape[-3:])


def local_target(shots: torch.Tensor, record: FusionRecord, mode: str = "nearest") -> torch.Tensor:
    """The image-level counterpart of a local fusion: ``shots [B, k, 3, S, S]`` → target ``[B, 3, s, s]``.

    The thumbnails (``s`` = ``record.feature_size``, one pixel per feature position) are reordered base-first and
    passed through the *same* :func:`local_replacement` as the features, with the recorded positions and α.
    """
    if record.positions is None:
        raise ValueError("local_target needs a FusionRecord from local fusion (positions recorded)")
    s = record.feature_size
    small = gather_shots(thumbnails(shots, s, mode), record.order).flatten(3)  # [B, k, 3, s·s]
    fused = local_replacement(small[:, 0], small[:, 1:], record.positions, record.ref_positions, record.alpha)
    return fused.view(shots.shape[0], 3, s, s)


def local_reconstruction_loss(
    fake: torch.Tensor, shots: torch.Tensor, record: FusionRecord, mode: str = "nearest"
) -> torch.Tensor:
    """L1 between the fake's ``s×s`` thumbnail and :func:`local_target` (a scalar). ``fake [B, 3, S, S]``."""
    target = local_target(shots, record, mode)
    return (thumbnails(fake, record.feature_size, mode) - target).abs().mean()


def global_reconstruction_loss(fake: torch.Tensor, shots: torch.Tensor, record: FusionRecord) -> torch.Tensor:
    """L1 between the fake ``[B, 3, S, S]`` and the α-blended shots ``Σ_k α_k x_k`` (global-fusion baseline)."""
    alpha = record.alpha.to(shots.dtype)
    blended = (alpha[:, :, None, None, None] * gather_shots(shots, record.order)).sum(dim=1)
    return (fake - blended).abs().mean()


# ----------------------------------------------------------------------------------------------------------
# Adversarial / class losses and the penalty
# ----------------------------------------------------------------------------------------------------------


def hinge_d_loss(real_adv: torch.Tensor, fake_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean relu(1 - D(real)), mean relu(1 + D(fake)))``."""
    return F.relu(1 - real_adv).mean(), F.relu(1 + fake_adv).mean()


def hinge_g_loss(fake_adv: torch.Tensor) -> torch.Tensor:
    """``mean -D(fake)``."""
    return -fake_adv.mean()


def class_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ACGAN class term: cross-entropy of the class head ``[N, classes]`` against ``labels [N]``."""
    return F.cross_entropy(logits, labels)


def class_logit_gradient_penalty(
    real_cls_logits: torch.Tensor, real: torch.Tensor, labels: torch.Tensor, n_episodes: int
) -> torch.Tensor:
    """R1-style penalty on the true-class logit: ``Σ ‖∂ mean(s_y) / ∂x‖² / B`` (B = episodes, as the reference).

    ``real`` must require grad and be the input that produced ``real_cls_logits [N, classes]``.
    """
    s = real_cls_logits.gather(1, labels[:, None]).mean()
    with input_gradients_only():  # D's weight gradients are not needed here (saves a third of this pass)
        (grad,) = torch.autograd.grad(s, real, create_graph=True)
    return grad.pow(2).sum() / n_episodes


# ----------------------------------------------------------------------------------------------------------
# Optimisation
# ----------------------------------------------------------------------------------------------------------


def lr_at(step: int, base_lr: float, steps: int, decay_start: int) -> float:
    """Constant ``base_lr`` until ``decay_start``, then linear to 0 at ``steps``."""
    if step < decay_start or steps <= decay_start:
        return base_lr
    return base_lr * max(0.0, (steps - step) / (steps - decay_start))


def make_optimizers(
    g: torch.nn.Module, d: torch.nn.Module, cfg: LoFGANConfig
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for G and D with the reference's betas and weight decay."""
    return (
        torch.optim.Adam(g.parameters(), cfg.lr_g, betas=cfg.betas, weight_decay=cfg.weight_decay),
        torch.optim.Adam(d.parameters(), cfg.lr_d, betas=cfg.betas, weight_decay=cfg.weight_decay),
    )


def main_pass(cfg: LoFGANConfig, device: torch.device, enabled: bool = True):
    """The autocast context of a main G or D pass under ``cfg.amp`` (a no-op without amp or when not ``enabled``)."""
    if cfg.amp == "none" or not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[cfg.amp])


def loss_precision(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Outputs of a reduced-precision (amp) pass → float32 for the losses; float32 and float64 stay as they are
    (a float64 model keeps float64 losses: casting them to float32 would add float32 rounding to gradients
    that should be exactly zero, such as D's real/fake bias, which Adam then turns into lr-sized steps)."""
    return tuple(t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors)


def d_step(
    g: LoFGANGenerator,
    d: LoFGANDiscriminator,
    opt_d: torch.optim.Optimizer,
    shots: torch.Tensor,
    labels: torch.Tensor,
    cfg: LoFGANConfig,
    generator: torch.Generator | None = None,
    step: int = 0,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One D update on ``shots [B, k, 3, S, S]``, ``labels [B]``. Returns the loss terms as floats.

    The penalty runs when ``step % cfg.gp_every == 0``, weighted ``w_gp · gp_every`` (lazy regularisation).
    Under ``cfg.amp`` the fake pass runs in reduced precision, the real pass too except on penalty steps (the
    penalty differentiates it twice, in float32); ``scaler`` scales fp16 losses.
    """
    b, k = shots.shape[:2]
    use_gp = cfg.w_gp > 0 and step % max(1, cfg.gp_every) == 0
    real = shots.flatten(0, 1).detach().requires_grad_(use_gp)  # [B·k, 3, S, S]
    y_real = labels.repeat_interleave(k)  # [B·k]
    with torch.no_grad(), main_pass(cfg, shots.device):
        fake, _ = g(shots, generator=generator)  # [B, 3, S, S]
    with main_pass(cfg, shots.device, enabled=not use_gp):
        real_adv, real_cls = d(real)
    with main_pass(cfg, shots.device):
        fake_adv, _ = d(fake)
    real_adv, real_cls, fake_adv = loss_precision(real_adv, real_cls, fake_adv)
    l_real, l_fake = hinge_d_loss(real_adv, fake_adv)
    l_cls = class_loss(real_cls, y_real)
    l_gp = class_logit_gradient_penalty(real_cls, real, y_real, b) if use_gp else real_adv.new_zeros(())
    loss = cfg.w_adv * (l_real + l_fake) + cfg.w_cls * l_cls + cfg.w_gp * max(1, cfg.gp_every) * l_gp
    # no gradient for the real images
    backward_and_step(
        loss,
        opt_d,
        scaler,
        all_reduce=distributed.world_size() > 1,
        inputs=[p for p in d.parameters() if p.requires_grad],
    )
    return {"d_real": l_real.item(), "d_fake": l_fake.item(), "d_cls": l_cls.item(), "d_gp": l_gp.item()}


def g_step(
    g: LoFGANGenerator,
    d: LoFGANDiscriminator,
    opt_g: torch.optim.Optimizer,
    shots: torch.Tensor,
    labels: torch.Tensor,
    cfg: LoFGANConfig,
    generator: torch.Generator | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One G update: adversarial + class + reconstruction (local for LoFGAN, α-blend L1 for global fusion).

    D's weights get no gradient here (they would be discarded before D's next step anyway), which saves the
    weight-gradient half of D's backward pass. Under ``cfg.amp`` the G and D passes run in reduced precision
    and the losses in float32.
    """
    with main_pass(cfg, shots.device):
        fake, record = g(shots, generator=generator)  # [B, 3, S, S]
        with frozen(d):
            fake_adv, fake_cls = d(fake)
    fake, fake_adv, fake_cls = loss_precision(fake, fake_adv, fake_cls)
    l_adv = hinge_g_loss(fake_adv)
    l_cls = class_loss(fake_cls, labels)
    if g.fusion_kind == "local":
        l_rec = local_reconstruction_loss(fake, shots, record, cfg.recon_mode)
    else:
        l_rec = global_reconstruction_loss(fake, shots, record)
    loss = cfg.w_adv * l_adv + cfg.w_cls * l_cls + cfg.w_recon * l_rec
    backward_and_step(loss, opt_g, scaler, all_reduce=distributed.world_size() > 1)
    return {"g_adv": l_adv.item(), "g_cls": l_cls.item(), "g_rec": l_rec.item()}


def train_step(
    g,
    d,
    opt_g,
    opt_d,
    shots: torch.Tensor,
    labels: torch.Tensor,
    cfg: LoFGANConfig,
    generator: torch.Generator | None = None,
    step: int = 0,
    scalers: dict[str, torch.amp.GradScaler] | None = None,
) -> dict[str, float]:
    """``d_step`` then ``g_step`` on the same episodes (the reference order). Raises on a non-finite loss."""
    scalers = scalers or {}
    losses = d_step(g, d, opt_d, shots, labels, cfg, generator, step, scalers.get("d"))
    losses.update(g_step(g, d, opt_g, shots, labels, cfg, generator, scalers.get("g")))
    bad = {k: v for k, v in losses.items() if not np.isfinite(v)}
    if bad:
        raise FloatingPointError(f"non-finite LoFGAN loss terms: {bad}")
    return losses


# ----------------------------------------------------------------------------------------------------------
# A small resumable loop
# ----------------------------------------------------------------------------------------------------------


class LoFGANTrainer(ResumableTrainer):
    """G, D, their optimisers, the episode sampler and the randomness, with atomic resumable checkpoints.

    Args:
        images_by_class: ``{class: [n, 3, S, S]}`` for the *seen* classes only (labels are their order).
        cfg: :class:`LoFGANConfig`.
        seed: seeds the weights, the episodes and the fusion randomness (each its own CPU generator).
        device: where G and D live; episodes are drawn on CPU and moved there.
        checkpoint: path of ``checkpoint.pt``; :meth:`train` saves to it and :meth:`resume` continues from it.

    Checkpoint, exact resume, history and progress come from :class:`fewshot_lib.train.ResumableTrainer`
    (shared with ``GANTrainer``); the keys of :meth:`state_dict` are the checkpoint format: keep them.

    Under ``torchrun`` (after :func:`fewshot_lib.distributed.init_from_env`) ``cfg.batch`` is the global number
    of episodes; each rank trains on a contiguous slice of them and the N ranks take the single-process step
    (:mod:`fewshot_lib.distributed`): G's BatchNorm layers use the global batch's statistics, the fusion draws
    its randomness for the global batch, the gradients are averaged before each optimiser step, and the
    penalty is rescaled (below). Only rank 0 writes checkpoints.
    """

    def __init__(
        self,
        images_by_class: dict[str, torch.Tensor],
        cfg: LoFGANConfig,
        seed: int = 0,
        device: str | torch.device = "cpu",
        checkpoint: str | Path | None = None,
    ):
        self.cfg, self.device = cfg, torch.device(device)
        self.classes = list(images_by_class)
        sizes = {x.shape[-1] for x in images_by_class.values()}
        if sizes != {cfg.size}:
            raise ValueError(f"images_by_class holds sizes {sorted(sizes)}; cfg.size is {cfg.size}")
        torch.manual_seed(seed)
        self.g = LoFGANGenerator(cfg.size, cfg.feature_size, cfg.nf, cfg.fusion, cfg.rate).to(self.device)
        self.d = LoFGANDiscriminator(
            len(self.classes), cfg.size, cfg.feature_size, cfg.nf_d, cfg.max_nf_d
        ).to(self.device)
        init_kaiming(self.g)
        init_kaiming(self.d)
        if cfg.channels_last:
            self.g, self.d = (m.to(memory_format=torch.channels_last) for m in (self.g, self.d))
        self.opt_g, self.opt_d = make_optimizers(self.g, self.d, cfg)
        # fp16's narrow range needs loss scaling; bf16 has float32's range
        self.scalers = (
            {k: torch.amp.GradScaler(self.device.type) for k in ("g", "d")} if cfg.amp == "fp16" else {}
        )
        self.sampler = EpisodeSampler(images_by_class, cfg.k, cfg.batch, torch.Generator().manual_seed(seed))
        self.fusion_rng = torch.Generator().manual_seed(seed + 1)
        self.step = 0
        self.history: dict[str, list[float]] = {}
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.shard: distributed.Shard | None = None  # this rank's episodes (None: one process)
        if distributed.world_size() > 1:
            n = distributed.world_size()
            self.shard = distributed.Shard(
                distributed.shard_rows(cfg.batch, n, distributed.rank()), cfg.batch
            )
            distributed.sync_batchnorm(self.g)  # same parameters and keys; global-batch statistics
            for m in (self.g, self.d):
                distributed.broadcast_module(m)  # (the gradients are averaged in backward_and_step)

    def state_dict(self) -> dict:
        return {
            "g": self.g.state_dict(),
            "d": self.d.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step": self.step,
            "history": self.history,
            "cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.cfg).items()},
            "classes": self.classes,
            "sampler_rng": self.sampler.generator.get_state(),
            "fusion_rng": self.fusion_rng.get_state(),
            # only with amp="fp16": other runs keep the older format's keys
            **({"scalers": {k: v.state_dict() for k, v in self.scalers.items()}} if self.scalers else {}),
        }

    def load_state_dict(self, state: dict, source: str = "checkpoint") -> None:
        if list(state["classes"]) != self.classes:
            raise ValueError(f"{source} was trained on different classes than this trainer's images_by_class")
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.sampler.generator.set_state(state["sampler_rng"])
        self.fusion_rng.set_state(state["fusion_rng"])
        for k, saved in (state.get("scalers") or {}).items():
            if k in self.scalers:
                self.scalers[k].load_state_dict(saved)

    @property
    def checkpoint_path(self) -> Path | None:
        return self.checkpoint

    def train_step(self) -> dict[str, float]:
        """One iteration at the scheduled learning rates: draw episodes, then the module-level
        :func:`train_step` (D step, G step)."""
        for opt, lr in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr_at(self.step, lr, self.cfg.steps, self.cfg.decay_start)
        shots, labels = self.sampler.sample()
        if self.shard is not None:
            return self._sharded_train_step(shots, labels)
        return train_step(
            self.g,
            self.d,
            self.opt_g,
            self.opt_d,
            shots.to(self.device),
            labels.to(self.device),
            self.cfg,
            self.fusion_rng,
            self.step,
            self.scalers,
        )

    def _sharded_train_step(self, shots: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """The module-level :func:`train_step` on this rank's episodes of the global batch; losses are the global
        batch's (means over the ranks).

        The penalty is the one term that is not a mean over samples: ``Σ‖∂ mean(s_y)/∂x‖² / B`` on ``b = B/N``
        episodes is ``N³`` times this rank's share of the global value (the inner mean is over ``N`` times fewer
        images, squared, and the division is by ``N`` times fewer episodes); averaged over the ranks that is
        ``N²`` too much, so its weight is divided by ``N²`` (and so is the logged value)."""
        n = distributed.world_size()
        cfg = dataclasses.replace(self.cfg, w_gp=self.cfg.w_gp / n**2)
        with self._fusion_on_global_batch():
            losses = train_step(
                self.g,
                self.d,
                self.opt_g,
                self.opt_d,
                self.shard.take(shots).to(self.device),
                self.shard.take(labels).to(self.device),
                cfg,
                self.fusion_rng,
                self.step,
                self.scalers,
            )
        keys = sorted(losses)
        mean = distributed.all_reduce_mean(torch.tensor([losses[k] for k in keys], dtype=torch.float64))
        losses = dict(zip(keys, mean.tolist()))
        losses["d_gp"] /= n**2
        return losses

    @contextlib.contextmanager
    def _fusion_on_global_batch(self):
        """Inside the block G's fusion module sees this rank's feature maps placed at their rows of the global
        batch (zeros elsewhere), so it draws the base shots, α and selected positions of the *global* batch, as
        the single process does; its output and record are cut back to this rank's episodes."""
        shard = self.shard

        def before(module, args, kwargs):
            return (shard.pad(args[0]), *args[1:]), kwargs

        def after(module, args, kwargs, output):
            fused, record = output
            cut = {
                f.name: shard.take(getattr(record, f.name))
                for f in dataclasses.fields(record)
                if isinstance(getattr(record, f.name), torch.Tensor)
            }
            return shard.take(fused), dataclasses.replace(record, **cut)

        handles = [
            self.g.fusion.register_forward_pre_hook(before, with_kwargs=True),
            self.g.fusion.register_forward_hook(after, with_kwargs=True),
        ]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def train(
        self, steps: int | None = None, save_every: int = 500, show_progress: bool = True
    ) -> dict[str, list[float]]:
        """Train until ``steps`` total iterations (default ``cfg.steps``); returns the loss history."""
        steps = self.cfg.steps if steps is None else steps
        self.g.train()
        self.d.train()
        t0, start = time.perf_counter(), self.step

        main = distributed.is_main()  # only rank 0 writes

        def after_step(logs: dict[str, float], bar) -> None:
            if main and self.checkpoint is not None and (self.step % save_every == 0 or self.step == steps):
                self.save()

        self._loop(steps, f"LoFGAN ({self.cfg.fusion} fusion)", show_progress and main, after_step)
        distributed.barrier()  # the other ranks return once rank 0's checkpoint is on disk
        done = self.step - start
        if done:
            log.info("%d LoFGAN steps in %.1f s", done, time.perf_counter() - t0)
        return self.history


# ----------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(
    g: LoFGANGenerator,
    shots: torch.Tensor,
    n: int,
    eta: float | None = None,
    generator: torch.Generator | None = None,
    batch: int = 64,
    eval_mode: bool = True,
) -> torch.Tensor:
    """``n`` new images from ``shots [k, 3, S, S]`` of one (unseen) class → ``[n, 3, S, S]`` in ``[-1, 1]``.

    Each image draws its own base shot, α and selected positions; ``eta`` overrides the selection rate.
    ``eval_mode`` uses BatchNorm running statistics (as the reference's test scripts); G's mode is restored.
    """
    if shots.dim() != 4:
        raise ValueError(f"shots must be [k, 3, S, S] images of one class, got {tuple(shots.shape)}")
    was_training = g.training
    g.train(not eval_mode)
    dev = next(g.parameters()).device
    out = []
    try:
        for s in range(0, n, batch):
            m = min(batch, n - s)
            x = shots.to(dev).unsqueeze(0).expand(m, *shots.shape)
            out.append(g(x, rate=eta, generator=generator)[0].cpu())
    finally:
        g.train(was_training)
    return torch.cat(out) if out else shots.new_zeros(0, *shots.shape[1:])


def export_name(fusion: str, seed: int) -> str:
    """The shipped name of a long-trained run of ``scripts/train_lofgan.py``: ``lofgan_emoji32_seed0`` (local
    fusion) or ``globalfusion_emoji32_seed0``."""
    if fusion not in ("local", "global"):
        raise ValueError(f"fusion must be 'local' or 'global', got {fusion!r}")
    return f"{'lofgan' if fusion == 'local' else 'globalfusion'}_emoji32_seed{seed}"


def shipped_exports(fusion: str, min_steps: int = 0) -> dict[int, str]:
    """``{seed: name}`` of the long-trained generators of ``fusion`` that ship in ``data/checkpoints`` now (each
    seed a separately trained run) and have trained at least ``min_steps`` iterations (runs still in progress
    ship between sessions so that training continues from them); load one with ``fewshot_lib.artifacts.load``."""
    from .. import artifacts

    prefix = export_name(fusion, 0)[: -len("0")]
    found = {
        int(n[len(prefix) :]): n
        for n in artifacts.names()
        if n.startswith(prefix) and n[len(prefix) :].isdigit()
    }
    if min_steps:
        found = {s: n for s, n in found.items() if artifacts.manifest(n)["steps"] >= min_steps}
    return dict(sorted(found.items()))


def episode_generate_fn(
    g: LoFGANGenerator, eta: float | None = None, generator: torch.Generator | None = None
):
    """``shots [B, k, 3, S, S] → [B, 3, S, S]`` (eval-mode G) for :func:`fewshot_lib.metrics.evaluate_per_class`."""

    def fn(shots: torch.Tensor) -> torch.Tensor:
        was = g.training
        g.eval()
        try:
            with torch.no_grad():
                return g(shots.to(next(g.parameters()).device), rate=eta, generator=generator)[0]
        finally:
            g.train(was)

    return fn


# ----------------------------------------------------------------------------------------------------------
# Emoji classes for episodic training
# ----------------------------------------------------------------------------------------------------------


def emoji_episode_classes(
    data, styles: tuple[str, ...] = ("noto", "twemoji"), min_count: int = 10, n_unseen: int = 20
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Seen and unseen classes for k-shot training on the embedded emoji: a class is *one subcategory drawn in
    one style* (``"noto/animal-mammal"``).

    Why this definition: inside such a class the images share a drawing style and a theme — like a flower
    species — so "new member of the class" is well defined; pooling styles into one class would make an
    episode mix a flat Noto dog with a 3-D Fluent cat. The split is made on *subcategories* with the project's
    fixed :func:`~fewshot_lib.data.fewshot.class_split` (on the pooled styles), so an unseen subcategory is
    unseen in every style — no concept leaks from training into evaluation through another style.
    Classes with fewer than ``min_count`` images in a style are dropped.

    Returns ``(seen, unseen)``: ``{"style/subcategory": [n, 3, H, W] in [-1, 1]}``.
    """
    pooled = data.select(styles=list(styles))
    seen_subs, unseen_subs = class_split(pooled, by="subcategory", min_count=min_count, n_unseen=n_unseen)
    seen: dict[str, torch.Tensor] = {}
    unseen: dict[str, torch.Tensor] = {}
    for style in styles:
        one = data.select(styles=[style])
        eligible = set(one.classes("subcategory", min_count=min_count))
        for subs, out in ((seen_subs, seen), (unseen_subs, unseen)):
            keep = [c for c in subs if c in eligible]
            for c, x in class_tensors(one, keep, "subcategory").items():
                out[f"{style}/{c}"] = x
    if not seen or not unseen:
        raise ValueError(
            f"styles {styles} with min_count={min_count} leave {len(seen)} seen and "
            f"{len(unseen)} unseen classes"
        )
    return seen, unseen
