"""A generic, readable GAN training loop (StyleGAN2 recipe) with hooks for few-shot methods.

One iteration (the rosinality order):

1. **D step**: fake = G(z) (no grad to G); ``L_D = softplus(D(aug(fake))) + softplus(-D(aug(real)))`` (+ hook
   term); every ``r1_every`` steps the lazy R1 penalty ``γ/2 · ‖∇ D(real)‖² · r1_every``.
2. **G step**: ``L_G = softplus(-D(aug(G(z))))`` (+ hook term); every ``pl_every`` steps the lazy path-length
   penalty ``pl_weight · pl_every · (‖J_wᵀy‖ - a)²`` on a smaller batch.
3. **EMA**: ``G_ema ← β·G_ema + (1-β)·G`` with ``β = 0.5^(batch / half_life_images)`` — the half-life is in
   *images*, so it means the same at every batch size (10k images in the paper).

z's use style mixing (two z's with probability 0.9). Augmentation (DiffAugment, optionally ADA-adaptive) is
applied to everything D sees. Optimisers are Adam(β=(0, 0.99)) with the lazy-regularisation correction.

**Hooks** let CDC / MixDL add their pieces without copying the loop (see :class:`GANHook`): the latent
sampler, the way D scores images (e.g. CDC's patch-level logits), extra D and G loss terms, extra trainable
modules (optimised with D's or G's Adam) and extra state to checkpoint.

**Checkpoints** (``run_dir/checkpoint.pt``, written atomically) hold everything needed to continue *exactly*:
G, D, G_ema (rosinality key names), both optimisers, step, path-length mean, ADA state, loss history, hook
state and every RNG (torch global, the trainer's CPU generator, Python, NumPy). ``resume=True`` continues
bit-for-bit (tested). A non-finite loss stops training with a ``FloatingPointError`` naming the step and term.
Saving, loading, resuming, the loss history and the progress loop live in :class:`ResumableTrainer`, which
``fewshot_lib.methods.lofgan.LoFGANTrainer`` shares; the losses are :mod:`fewshot_lib.stylegan2_losses`.

**Several processes** (``torchrun --nproc_per_node=N``, after :func:`fewshot_lib.distributed.init_from_env`):
``config.batch`` stays the *global* batch; each rank computes its share of it (its rows of z, noise, real
images and augmentation draws, whole minibatch-stddev groups) and the gradients are averaged after every
``backward`` — the recipe is in :mod:`fewshot_lib.distributed` — so N ranks take the single-process step. Only
rank 0 writes checkpoints and samples; every rank resumes from the same checkpoint.

**GPU options** (all off by default, so CPU results stay bit-identical): ``amp`` (bf16, or fp16 with a gradient
scaler) for the main G and D passes — R1 and the path-length penalty, whose double backward is sensitive to
rounding, stay float32; ``channels_last``; ``compile`` (``torch.compile`` of the main passes; the regularisers
use the eager modules, as compiled graphs do not double-backward); ``cudnn_benchmark``; ``pin_memory``.

Taught in: ``notebooks/02_stylegan2_training.ipynb``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import distributed
from .augment import AdaptiveAugment, diff_augment, parse_policy
from .checkpoint import load_checkpoint, save_atomic
from .models.helpers import accumulate, frozen
from .models.stylegan2 import same_architecture, stddev_group_size
from .models.stylegan2_io import load_state_strict
from .progress import progress
from .stylegan2_losses import (
    PathLengthState,
    d_logistic_loss,
    g_nonsaturating_loss,
    lazy_adam_params,
    mixing_noise,
    path_length_penalty,
    r1_penalty,
)

log = logging.getLogger(__name__)

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    """Hyper-parameters of :class:`GANTrainer` (defaults: StyleGAN2 config-f, except the EMA half-life)."""

    steps: int = 1000  # total iterations (a resumed run continues up to this number)
    batch: int = 16
    lr: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 10.0  # R1 weight γ (penalty γ/2·‖∇D‖²); 0 disables
    r1_every: int = 16  # lazy R1 interval
    pl_weight: float = 2.0  # path-length weight; 0 disables
    pl_every: int = 4  # lazy path-length interval
    pl_batch_shrink: int = 2  # PL batch = batch // shrink
    mixing: float = 0.9  # style-mixing probability
    ema_half_life_images: float = 10_000.0
    ema_rampup: float | None = None  # NVlabs ramp-up: half-life ≤ rampup · images seen so far (e.g. 0.05)
    augment: str | None = "color,translation,cutout"  # DiffAugment policy; None/"" = no augmentation
    augment_p: float = 1.0  # fixed probability per op (ignored when ada_target is set)
    ada_target: float | None = None  # set (e.g. 0.6) to adapt p ADA-style, starting from 0
    ada_speed_images: int = 20_000
    xflip: bool = False  # random horizontal flips of the real images
    sample_every: int = 0  # save a G_ema sample grid every N steps (0 = only at the end)
    n_sample: int = 16
    checkpoint_every: int = 0  # 0 = only at the end
    log_every: int = 10  # progress-bar postfix refresh
    seed: int = 0
    # GPU options, all off by default (CPU results stay bit-identical):
    amp: str = "none"  # mixed precision of the main G/D passes: "none", "bf16" or "fp16" (with a grad scaler)
    channels_last: bool = False  # NHWC memory layout for G, D and the batches (faster convs on tensor cores)
    compile: bool = False  # torch.compile the main G and D passes (the regularisers stay eager)
    cudnn_benchmark: bool = False  # let cuDNN pick the fastest conv algorithms (CUDA only)
    pin_memory: bool = False  # page-locked real batches, copied asynchronously (CUDA only)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        for name in ("steps", "batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)} must be >= 1.")
        parse_policy(self.augment)  # fail early on a typo
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"TrainConfig.amp={self.amp!r}: choose one of {sorted(AMP_DTYPES)}")


@dataclass
class StepContext:
    """What hooks see in one iteration: the step, the modules, the batch and the current fakes/latents."""

    step: int
    trainer: "GANTrainer"
    real: torch.Tensor  # [B, 3, H, W] on device
    z: list[torch.Tensor] | None = None  # latents used for this phase
    fake: torch.Tensor | None = None  # [B, 3, H, W]
    real_logits: torch.Tensor | None = None
    fake_logits: torch.Tensor | None = None


class GANHook:
    """Override any method to add a method's pieces to the plain StyleGAN2 loop. All defaults are no-ops.

    * ``sample_z(step, batch)`` → list of one or two ``[B, D]`` z's (default: style-mixing noise);
    * ``discriminate(D, images, step, phase)`` → logits of any shape (default ``D(images)``);
    * ``d_extra(ctx)`` / ``g_extra(ctx)`` → a scalar added to D's / G's loss (``None`` = nothing);
    * ``d_modules()`` / ``g_modules()`` → extra ``nn.Module`` s trained with D's / G's optimiser;
    * ``state_dict()`` / ``load_state_dict()`` → extra state saved in checkpoints.
    """

    def sample_z(self, trainer: "GANTrainer", step: int, batch: int) -> list[torch.Tensor] | None:
        return None

    def discriminate(
        self, D: nn.Module, images: torch.Tensor, step: int, phase: str, **c: torch.Tensor
    ) -> torch.Tensor:
        return D(images, **c)  # c: the classes, only for a class-conditional D

    def d_extra(self, ctx: StepContext) -> torch.Tensor | None:
        return None

    def g_extra(self, ctx: StepContext) -> torch.Tensor | None:
        return None

    def d_modules(self) -> list[nn.Module]:
        return []

    def g_modules(self) -> list[nn.Module]:
        return []

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class TrainResult:
    """What :meth:`GANTrainer.train` returns."""

    history: dict[str, list[float]]
    checkpoint: Path | None
    steps: int
    seconds: float
    samples: list[Path] = field(default_factory=list)


def _check_finite(value: torch.Tensor, name: str, step: int, checkpoint: Path | None) -> None:
    if not torch.isfinite(value).all():
        where = (
            f" The last good checkpoint is {checkpoint.name}." if checkpoint and checkpoint.exists() else ""
        )
        raise FloatingPointError(
            f"Non-finite {name} ({value.detach().flatten()[0].item()}) at step {step}. The GAN diverged: lower the "
            f"learning rate, raise r1_gamma, or check the data for NaNs/[-1,1] range.{where}"
        )


def backward_and_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    *,
    all_reduce: bool = False,
    inputs: list[torch.Tensor] | None = None,
) -> None:
    """``loss.backward()`` then ``optimizer.step()``, the one way every trainer of the package takes a step.

    Through ``scaler`` (fp16's loss scaling) when there is one. With ``all_reduce`` (under ``torchrun``) the
    gradients are averaged over the ranks first — before fp16's inf check too, so that every rank skips or
    takes the same step. ``inputs`` limits the backward pass to those tensors (e.g. D's trainable weights)."""
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward(inputs=inputs)
    if all_reduce:
        distributed.all_reduce_grads(p for group in optimizer.param_groups for p in group["params"])
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


class ResumableTrainer:
    """What every trainer of the package shares: one checkpoint file written atomically, exact resume, the
    loss history and the progress-bar loop.

    A subclass provides :meth:`state_dict` / :meth:`load_state_dict` (everything a resume needs: weights,
    optimisers, RNG states, ``step``, ``history``), :meth:`train_step` (one iteration → its loss terms as
    floats) and :attr:`checkpoint_path`. The keys a subclass saves are its checkpoint format: keep them, so
    that runs written by earlier versions resume (``tests/test_trainer_resume.py``).
    """

    step: int
    history: dict[str, list[float]]

    @property
    def checkpoint_path(self) -> Path | None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        raise NotImplementedError

    def train_step(self) -> dict[str, float]:
        raise NotImplementedError

    def _log(self, **values: float) -> None:
        """Append each value to its loss curve in :attr:`history` (hooks add their own terms this way)."""
        for k, v in values.items():
            self.history.setdefault(k, []).append(float(v))

    def save(self, path: str | Path | None = None) -> Path:
        """Write :meth:`state_dict` atomically to ``path`` (default :attr:`checkpoint_path`)."""
        path = Path(path) if path else self.checkpoint_path
        if path is None:
            raise ValueError(f"{type(self).__name__}.save needs a path (or a checkpoint location).")
        return save_atomic(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save` (on CPU; weights then move to the modules' device)."""
        self.load_state_dict(load_checkpoint(path), source=Path(path).name)
        log.info("Resumed %s from %s at step %d", type(self).__name__, path, self.step)

    def resume(self) -> bool:
        """Load :attr:`checkpoint_path` if it exists; returns whether it did."""
        path = self.checkpoint_path
        if path is None or not path.is_file():
            return False
        self.load(path)
        return True

    def _loop(
        self, total: int, desc: str, show_progress: bool, after_step: Callable[[dict[str, float], Any], None]
    ) -> None:
        """:meth:`train_step` until ``step == total``: record the losses, advance, then ``after_step(logs, bar)``
        (checkpoints, samples, the bar's postfix)."""
        bar = progress(total=total, initial=self.step, desc=desc, disable=not show_progress)
        try:
            while self.step < total:
                logs = self.train_step()
                self._log(**logs)
                self.step += 1
                bar.update(1)
                after_step(logs, bar)
        finally:
            bar.close()


def _to_channels_last(module: nn.Module) -> None:
    """Store the 4-D weights of ``module`` as NHWC, in place (the same Parameter objects). Not ``module.to(
    memory_format=...)``: that refuses the modulated convs' 5-D weights, which stay as they are."""
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)


def _check_labels(labels: torch.Tensor | None, images: torch.Tensor, c_dim: int) -> torch.Tensor | None:
    """Class indices ``[N]`` for a conditional generator (``c_dim > 0``), ``None`` for an unconditional one."""
    if not c_dim:
        if labels is not None:
            raise ValueError("labels were given but the generator is unconditional (c_dim = 0)")
        return None
    if labels is None:
        raise ValueError(
            f"the generator is class-conditional ({c_dim} classes): pass labels=[N] class indices"
        )
    labels = torch.as_tensor(labels)
    if labels.shape != (len(images),) or labels.dtype.is_floating_point:
        raise ValueError(
            f"labels must be integer class indices [{len(images)}], got {labels.dtype} {tuple(labels.shape)}"
        )
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= c_dim):
        raise ValueError(f"labels must be in [0, {c_dim}), got {int(labels.min())}..{int(labels.max())}")
    return labels.long().cpu()


class GANTrainer(ResumableTrainer):
    """Trains ``G`` / ``D`` on ``images`` ``[N, 3, H, W]`` in ``[-1, 1]`` (kept on CPU, batches moved to device).

    ``run_dir``: where ``checkpoint.pt`` and ``samples/step_XXXXXX.png`` go (``None`` = nothing written).
    ``sample_callback(step, images)`` is called with each G_ema sample grid (e.g. to plot in a notebook).
    ``labels``: class indices ``[N]`` of the images, for a class-conditional G and D (``c_dim > 0``): reals are
    judged with their own class, fakes are drawn with classes sampled like the data's. ``class_balanced=True``
    draws every class equally often instead (reals: a class, then one of its images; fakes: the same class
    marginal), so that small classes are not left behind the large ones.
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        images: torch.Tensor,
        config: TrainConfig | None = None,
        run_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        hook: GANHook | None = None,
        g_ema: nn.Module | None = None,
        sample_callback: Callable[[int, torch.Tensor], None] | None = None,
        labels: torch.Tensor | None = None,
        class_balanced: bool = False,
    ):
        self.cfg = config or TrainConfig()
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images must be a [N, 3, H, W] tensor, got "
                f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}."
            )
        if images.shape[-1] != G.size:
            raise ValueError(f"images are {images.shape[-1]} px but the generator makes {G.size} px.")
        self.device = torch.device(device)
        self.images = images.float().cpu()
        self.labels = _check_labels(labels, images, getattr(G, "c_dim", 0))  # None when unconditional
        if class_balanced and self.labels is None:
            raise ValueError("class_balanced sampling needs labels (a class-conditional model)")
        # per-image weight 1/(images of its class): each class is then drawn equally often; None = uniform
        self.image_weights = 1.0 / torch.bincount(self.labels)[self.labels] if class_balanced else None
        self.real_c: torch.Tensor | None = None  # the classes of the last real batch
        self.G, self.D = G.to(self.device), D.to(self.device)
        self.g_ema = (g_ema if g_ema is not None else copy.deepcopy(G)).to(self.device).eval()
        if self.cfg.channels_last:
            for m in (self.G, self.D, self.g_ema):
                _to_channels_last(m)
        self.g_ema.requires_grad_(False)
        self.hook = hook or GANHook()
        self.run_dir = Path(run_dir) if run_dir else None
        self.sample_callback = sample_callback

        c = self.cfg
        g_lr, g_betas = lazy_adam_params(c.lr, c.betas, c.pl_every if c.pl_weight > 0 else 0)
        d_lr, d_betas = lazy_adam_params(c.lr, c.betas, c.r1_every if c.r1_gamma > 0 else 0)
        g_params = list(G.parameters()) + [p for m in self.hook.g_modules() for p in m.parameters()]
        d_params = list(D.parameters()) + [p for m in self.hook.d_modules() for p in m.parameters()]
        self.g_optim = torch.optim.Adam(g_params, lr=g_lr, betas=g_betas, eps=1e-8)
        self.d_optim = torch.optim.Adam(d_params, lr=d_lr, betas=d_betas, eps=1e-8)

        self.gen = torch.Generator().manual_seed(c.seed)  # data order, latents, augmentation, PL noise
        self.sample_z = torch.randn(
            c.n_sample, G.style_dim, generator=torch.Generator().manual_seed(c.seed + 1)
        )
        self.sample_c = (torch.arange(c.n_sample) % G.c_dim) if self.labels is not None else None
        self.pl_state = PathLengthState()
        self.ada = AdaptiveAugment(c.ada_target, c.ada_speed_images) if c.ada_target else None
        self.step = 0
        self.history: dict[str, list[float]] = {}
        self.samples: list[Path] = []
        self.seconds = 0.0
        self._setup_device_options()
        self.shard: distributed.Shard | None = (
            None  # this rank's rows of the global batch (None: one process)
        )
        self.pl_shard: distributed.Shard | None = None  # ... of the path-length batch
        if distributed.world_size() > 1:
            self._setup_distributed()

    def _setup_device_options(self) -> None:
        """The GPU options of the config: compiled main passes, cuDNN autotuning, fp16 gradient scalers."""
        c = self.cfg
        # the main passes may be compiled; R1 and path length call self.G / self.D (eager: double backward)
        self._G_main = torch.compile(self.G) if c.compile else self.G
        self._D_main = torch.compile(self.D) if c.compile else self.D
        if c.cudnn_benchmark and self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.amp_dtype = AMP_DTYPES[c.amp]
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        if c.amp == "fp16":  # fp16's narrow range needs loss scaling; bf16 has float32's range
            self.scalers = {k: torch.amp.GradScaler(self.device.type) for k in ("g", "d")}

    def _setup_distributed(self) -> None:
        """This rank's rows (whole minibatch-stddev groups), the same starting weights on every rank."""
        n, r, c = distributed.world_size(), distributed.rank(), self.cfg
        if type(self.hook) is not GANHook:
            raise NotImplementedError(
                f"{type(self.hook).__name__} under torchrun: hooks may compute terms across the whole batch "
                "(CDC's cross-sample distances, MixDL's mixup), which a rank holding a part of it would change; "
                "distributed training supports the plain (and class-conditional) StyleGAN2 loop"
            )
        group_cap = getattr(self.D, "stddev_group", None)
        group = stddev_group_size(c.batch, group_cap) if group_cap else 1
        self.shard = distributed.Shard(distributed.shard_rows(c.batch, n, r, group), c.batch)
        if group_cap and stddev_group_size(len(self.shard.rows), group_cap) != group:
            raise ValueError(
                f"batch {c.batch} over {n} ranks: a rank's {len(self.shard.rows)} rows would form minibatch-"
                f"stddev groups of {stddev_group_size(len(self.shard.rows), group_cap)}, not the single "
                f"process's {group}; use a global batch that is a multiple of {4 * n}"
            )
        if c.pl_weight > 0 and c.pl_every > 0:
            pb = max(1, c.batch // c.pl_batch_shrink)
            self.pl_shard = distributed.Shard(distributed.shard_rows(pb, n, r), pb)
        for m in (self.G, self.D, self.g_ema):
            distributed.broadcast_module(m)

    # -- pieces --------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoint.pt" if self.run_dir else None

    @property
    def augment_p(self) -> float:
        return self.ada.p if self.ada is not None else self.cfg.augment_p

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """DiffAugment of ``x [b, 3, H, W]``; on a rank, the draws are the global batch's, at this rank's rows."""
        if not self.cfg.augment:
            return x
        if self.shard is not None:
            return self.shard.around(lambda a: diff_augment(a, self.cfg.augment, self.augment_p, self.gen), x)
        return diff_augment(x, self.cfg.augment, self.augment_p, self.gen)

    def real_batch(self) -> torch.Tensor:
        """The next real batch ``[B, 3, H, W]`` on the device (a rank: its rows ``[b, 3, H, W]``)."""
        idx = self.draw_images(self.cfg.batch)
        flip = torch.rand(self.cfg.batch, generator=self.gen) < 0.5 if self.cfg.xflip else None
        if self.shard is not None:
            idx = self.shard.take(idx)
            flip = self.shard.take(flip) if flip is not None else None
        x = self.images[idx]
        if self.labels is not None:
            self.real_c = self.labels[idx].to(self.device)
        if flip is not None:
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if self.cfg.pin_memory and self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        else:
            x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def draw_images(self, n: int) -> torch.Tensor:
        """``n`` image indices ``[n]``: uniform over the images, or each class equally likely (``class_balanced``)."""
        if self.image_weights is None:
            return torch.randint(0, len(self.images), (n,), generator=self.gen)
        return torch.multinomial(self.image_weights, n, replacement=True, generator=self.gen)

    def fake_classes(self, batch: int, shard: distributed.Shard | None = None) -> torch.Tensor | None:
        """Classes for ``batch`` fakes, drawn like the reals' (``None`` for an unconditional model); with a
        ``shard``, drawn for the whole ``batch`` and cut to the shard's rows."""
        if self.labels is None:
            return None
        c = self.labels[self.draw_images(batch)]
        return (shard.take(c) if shard is not None else c).to(self.device)

    def discriminate(self, images: torch.Tensor, phase: str, c: torch.Tensor | None) -> torch.Tensor:
        """D's logits through the hook (conditional models pass the classes ``c`` on)."""
        if c is None:
            return self.hook.discriminate(self._D_main, images, self.step, phase)
        return self.hook.discriminate(self._D_main, images, self.step, phase, c=c)

    def latents(self, batch: int, shard: distributed.Shard | None = None) -> list[torch.Tensor]:
        """z's for ``batch`` samples (with a ``shard``: drawn for ``batch``, cut to the shard's rows)."""
        z = self.hook.sample_z(self, self.step, batch)
        z = (
            z
            if z is not None
            else mixing_noise(batch, self.G.style_dim, self.cfg.mixing, self.gen, self.device)
        )
        return z if shard is None else [shard.take(t) for t in z]

    def generate(
        self,
        z: list[torch.Tensor],
        c: torch.Tensor | None,
        shard: distributed.Shard | None,
        main: bool = True,
        **kw,
    ):
        """``G(z, c=c, **kw)`` (``main``: the possibly compiled module). With a ``shard``, G's own random draws —
        the style-mixing layer, then each layer's noise ``[batch, 1, r, r]`` from torch's global generator, in
        the order G would draw them — are made for the global batch and cut to the shard's rows."""
        G = self._G_main if main else self.G
        if shard is None:
            return G(z, c=c, **kw)
        if len(z) == 2:
            kw["inject_index"] = int(torch.randint(1, self.G.n_latent, ()).item())
        dev = z[0].device
        kw["noise"] = [
            shard.take(torch.randn(shard.batch, 1, *n.shape[-2:], device=dev))
            for n in self.G.noises.as_list()
        ]
        return G(z, c=c, **kw)

    def autocast(self):
        """Mixed precision for the main passes when ``config.amp`` asks for it (a no-op otherwise)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def ema_decay(self) -> float:
        hl = self.cfg.ema_half_life_images
        if self.cfg.ema_rampup is not None:
            hl = min(hl, (self.step + 1) * self.cfg.batch * self.cfg.ema_rampup)
        return 0.5 ** (self.cfg.batch / max(hl, 1e-8))

    # -- one iteration -------------------------------------------------------------------------------------
    def _optimise(
        self, loss: torch.Tensor, optim: torch.optim.Optimizer, what: str, checked: torch.Tensor | None = None
    ) -> None:
        """One optimiser step on ``loss`` after checking that it (or ``checked``, the term that ``what`` names) is
        finite, so a diverged GAN stops with a clear error instead of writing NaN weights."""
        _check_finite(loss if checked is None else checked, what, self.step, self.checkpoint_path)
        scaler = self.scalers.get("g" if optim is self.g_optim else "d")
        backward_and_step(loss, optim, scaler, all_reduce=self.shard is not None)

    def d_step(self, real: torch.Tensor) -> dict[str, float]:
        c, step = self.cfg, self.step
        z = self.latents(c.batch, self.shard)
        fake_c = self.fake_classes(c.batch, self.shard)
        with torch.no_grad(), self.autocast():
            fake, _ = self.generate(z, fake_c, self.shard)
        with self.autocast():
            fake_logits = self.discriminate(self.augment(fake), "d", fake_c).float()
            real_logits = self.discriminate(self.augment(real), "d", self.real_c).float()
        loss = d_logistic_loss(real_logits, fake_logits)
        extra = self.hook.d_extra(StepContext(step, self, real, z, fake, real_logits, fake_logits))
        if extra is not None:
            loss = loss + extra
        self._optimise(loss, self.d_optim, "discriminator loss")
        out = {
            "d_loss": loss.item(),
            "real_score": real_logits.mean().item(),
            "fake_score": fake_logits.mean().item(),
        }
        if self.ada is not None:  # the overfitting heuristic counts the signs over the global batch
            out["ada_p"] = self.ada.update(
                real_logits if self.shard is None else distributed.all_gather(real_logits)
            )
        if c.r1_gamma > 0 and c.r1_every > 0 and step % c.r1_every == 0:
            # float32 (no autocast): the penalty's double backward is sensitive to rounding
            real_req = real.detach().requires_grad_(True)  # gradient w.r.t. the clean image (through the aug)
            logits = (
                self.D(self.augment(real_req))
                if self.real_c is None
                else self.D(self.augment(real_req), self.real_c)
            )
            r1 = r1_penalty(logits, real_req)
            self._optimise(
                c.r1_gamma / 2 * r1 * c.r1_every + 0 * logits.flatten()[0],
                self.d_optim,
                "R1 penalty",
                checked=r1,
            )
            out["r1"] = r1.item()
        return out

    def g_step(self, real: torch.Tensor) -> dict[str, float]:
        c, step = self.cfg, self.step
        z = self.latents(c.batch, self.shard)
        fake_c = self.fake_classes(c.batch, self.shard)
        with frozen(
            self.D
        ):  # the loss flows through D to G; D's weights get no gradient and keep their flags
            with self.autocast():
                fake, _ = self.generate(z, fake_c, self.shard)
                fake_logits = self.discriminate(self.augment(fake), "g", fake_c).float()
            loss = g_nonsaturating_loss(fake_logits)
            extra = self.hook.g_extra(StepContext(step, self, real, z, fake, None, fake_logits))
            if extra is not None:
                loss = loss + extra
            self._optimise(loss, self.g_optim, "generator loss")
        out = {"g_loss": loss.item()}
        if (
            c.pl_weight > 0 and c.pl_every > 0 and step % c.pl_every == 0
        ):  # float32, eager G (double backward)
            pb = max(1, c.batch // c.pl_batch_shrink)
            if self.pl_shard is None:
                fake, latents = self.G(self.latents(pb), return_latents=True, c=self.fake_classes(pb))
                pl, lengths = path_length_penalty(fake, latents, self.pl_state, self.gen)
            else:  # this rank's rows of the global batch's draws; the running mean moves with every rank's lengths
                s = self.pl_shard
                fake, latents = self.generate(
                    self.latents(pb, s), self.fake_classes(pb, s), s, main=False, return_latents=True
                )
                pl, lengths = path_length_penalty(
                    fake,
                    latents,
                    self.pl_state,
                    y=s.take(torch.randn((pb, *fake.shape[1:]), generator=self.gen)),
                    batch_mean=lambda x: distributed.all_reduce_mean(x.mean().double()).item(),
                )
            mean_length = lengths.mean().item()  # (train_step averages the logs over the ranks)
            self._optimise(
                c.pl_weight * c.pl_every * pl + 0 * fake.flatten()[0],
                self.g_optim,
                "path-length penalty",
                checked=pl,
            )
            out.update(pl=pl.item(), path_length=mean_length)
        return out

    def train_step(self) -> dict[str, float]:
        real = self.real_batch()
        logs = self.d_step(real)
        logs.update(self.g_step(real))
        accumulate(self.g_ema, self.G, self.ema_decay())
        if self.shard is not None:  # every rank logs the global batch's values (means of the ranks')
            keys = sorted(logs)
            mean = distributed.all_reduce_mean(torch.tensor([logs[k] for k in keys], dtype=torch.float64))
            logs = dict(zip(keys, mean.tolist()))
        return logs

    # -- samples & checkpoints -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample_images(self) -> torch.Tensor:
        """G_ema on the fixed sample z's with the fixed noise buffers: ``[n_sample, 3, H, W]`` on CPU."""
        c = self.sample_c.to(self.device) if self.sample_c is not None else None
        img, _ = self.g_ema(self.sample_z.to(self.device), randomize_noise=False, c=c)
        return img.cpu()

    def _check_run_dir(self) -> None:
        """Fail before the first step, naming the folder, when ``run_dir`` cannot hold checkpoints and sample
        grids (a file in the way, no permission) — not with a raw OS error after minutes of training."""
        if self.run_dir is None:
            return
        from .checkpoint import CheckpointWriteError

        try:
            (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.run_dir, prefix=".write-test-"):
                pass
        except OSError as err:
            raise CheckpointWriteError(
                f"run folder {self.run_dir} cannot hold checkpoints and samples "
                f"({type(err).__name__}: {err.strerror or err}); choose another run_dir"
            ) from None

    def save_samples(self) -> torch.Tensor:
        images = self.sample_images()
        if self.run_dir:
            from .viz import save_grid

            path = self.run_dir / "samples" / f"step_{self.step:06d}.png"
            save_grid(images, path, nrow=int(math.ceil(math.sqrt(len(images)))))
            self.samples.append(path)
        if self.sample_callback is not None:
            self.sample_callback(self.step, images)
        return images

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        scaler = {"scaler": {k: v.state_dict() for k, v in self.scalers.items()}} if self.scalers else {}
        return {
            **scaler,  # only with amp="fp16": other runs keep the older format's keys
            "g": self.G.state_dict(),
            "d": self.D.state_dict(),
            "g_ema": self.g_ema.state_dict(),
            "g_optim": self.g_optim.state_dict(),
            "d_optim": self.d_optim.state_dict(),
            "g_config": getattr(self.G, "config", {}),
            "d_config": getattr(self.D, "config", {}),
            "train_config": asdict(self.cfg),
            "step": self.step,
            "seconds": self.seconds,
            "pl_state": self.pl_state.state_dict(),
            "ada": self.ada.state_dict() if self.ada else None,
            "history": self.history,
            "hook": self.hook.state_dict(),
            "hook_modules": {
                "d": [m.state_dict() for m in self.hook.d_modules()],
                "g": [m.state_dict() for m in self.hook.g_modules()],
            },
            "rng": {
                "torch": torch.get_rng_state(),
                "trainer": self.gen.get_state(),
                "python": random.getstate(),
                "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }

    def load_state_dict(self, ck: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore :meth:`state_dict` (strict: the architecture must match); ``source`` names it in errors."""
        for key in ("g", "d", "g_ema", "g_optim", "d_optim", "step", "rng"):
            if key not in ck:
                raise ValueError(f"{source} is not a GANTrainer checkpoint (missing {key!r}).")
        if (
            ck.get("g_config")
            and getattr(self.G, "config", None)
            and not same_architecture(ck["g_config"], self.G.config)
        ):
            raise ValueError(
                f"{source} was trained with generator config {ck['g_config']}, "
                f"but this trainer's generator is {self.G.config}. Use another run_dir or resume=False."
            )
        load_state_strict(self.G, ck["g"], f"{source}['g']")
        load_state_strict(self.D, ck["d"], f"{source}['d']")
        load_state_strict(self.g_ema, ck["g_ema"], f"{source}['g_ema']")
        for optim, saved in ((self.g_optim, ck["g_optim"]), (self.d_optim, ck["d_optim"])):
            wanted = [(g["lr"], g["betas"]) for g in optim.param_groups]
            optim.load_state_dict(saved)  # Adam's moments and step counts, and the saved lr and betas
            for group, (lr, betas) in zip(optim.param_groups, wanted):
                group["lr"], group["betas"] = lr, betas  # this config's: a resume with a new --lr uses it
        self.step, self.seconds = int(ck["step"]), float(ck.get("seconds", 0.0))
        self.pl_state.load_state_dict(ck["pl_state"])
        if self.ada is not None and ck.get("ada"):
            self.ada.load_state_dict(ck["ada"])
        self.history = {k: list(v) for k, v in ck.get("history", {}).items()}
        for k, saved in (ck.get("scaler") or {}).items():
            if k in self.scalers:
                self.scalers[k].load_state_dict(saved)
        self.hook.load_state_dict(ck.get("hook", {}))
        for m, s in zip(self.hook.d_modules(), ck.get("hook_modules", {}).get("d", [])):
            m.load_state_dict(s)
        for m, s in zip(self.hook.g_modules(), ck.get("hook_modules", {}).get("g", [])):
            m.load_state_dict(s)
        rng = ck["rng"]
        torch.set_rng_state(rng["torch"])
        self.gen.set_state(rng["trainer"])
        py = rng["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        npst = rng["numpy"]
        np.random.set_state((npst[0], npst[1].numpy().astype(np.uint32), *npst[2:]))
        if rng.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    # -- the loop ------------------------------------------------------------------------------------------
    def train(self, steps: int | None = None, resume: bool = True, show_progress: bool = True) -> TrainResult:
        """Train until ``steps`` total iterations (default ``config.steps``); resume from ``run_dir`` if asked."""
        total = int(steps if steps is not None else self.cfg.steps)
        main = distributed.is_main()  # only rank 0 writes; every rank reads the same checkpoint
        if main:
            self._check_run_dir()
        distributed.barrier()
        if resume and self.step == 0:
            self.resume()
        if self.shard is not None:
            distributed.broadcast_rng(self.device)  # G's own draws (noise, mixing layer) agree across ranks
        c, ck = self.cfg, self.checkpoint_path
        self.G.train()
        self.D.train()
        t0 = time.perf_counter()

        def after_step(logs: dict[str, float], bar: Any) -> None:
            nonlocal t0
            if self.step % max(1, c.log_every) == 0:
                bar.set_postfix(
                    {k: f"{logs[k]:.3f}" for k in ("d_loss", "g_loss") if k in logs}, refresh=False
                )
            if main and c.sample_every and self.step % c.sample_every == 0 and self.step < total:
                self.save_samples()
            if (
                main
                and c.checkpoint_every
                and ck is not None
                and self.step % c.checkpoint_every == 0
                and self.step < total
            ):
                self.seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                self.save()

        self._loop(total, "train", show_progress and main, after_step)
        self.seconds += time.perf_counter() - t0
        if main:
            self.save_samples()
            if ck is not None:
                self.save()
        distributed.barrier()  # the other ranks return once the checkpoint is on disk
        return TrainResult(
            history=self.history,
            checkpoint=ck if ck is not None and ck.exists() else None,
            steps=self.step,
            seconds=self.seconds,
            samples=list(self.samples),
        )


def train_gan(
    G: nn.Module,
    D: nn.Module,
    images: torch.Tensor,
    config: TrainConfig | None = None,
    run_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    resume: bool = True,
    hook: GANHook | None = None,
    **kwargs: Any,
) -> tuple[GANTrainer, TrainResult]:
    """Build a :class:`GANTrainer` and run it; returns ``(trainer, result)`` (``trainer.g_ema`` is the model)."""
    trainer = GANTrainer(G, D, images, config, run_dir=run_dir, device=device, hook=hook, **kwargs)
    return trainer, trainer.train(resume=resume)
