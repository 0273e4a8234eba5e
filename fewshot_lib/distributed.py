"""Data-parallel training across processes (``torchrun``): the process group, a rank's share of the batch, and
the few collectives the trainers need.

**The recipe** (StyleGAN3's training loop, without ``DistributedDataParallel``). Every rank holds the same
weights and optimiser state and draws the *same* random numbers as a single process training on the whole
(global) batch would; each then computes its slice of that batch — its rows of z, noise, data indices and
augmentation draws — and after each ``backward`` the gradients are averaged over the ranks by one
``all_reduce``. Every loss of the trainers is a mean over samples, so the averaged gradient is the single
process's gradient and the ranks take the single-process step (up to float rounding). DDP is not used because
its hooks fire on every ``backward``, while the regularisers (R1, path length, LoFGAN's penalty) differentiate
with ``torch.autograd.grad`` first; a manual all-reduce after the full ``backward`` is simpler and exact.

**Which rows a rank takes.** Contiguous slices of the global batch — except that StyleGAN2's discriminator
computes the minibatch standard deviation over groups of samples, and its groups are *strided* (sample ``j`` is
in group ``j mod B/g``). Viewing the batch as ``[g, B/g]`` (member, group), a rank takes a contiguous slice of
the *groups*, so each group stays on one rank and the rank's own grouping of its ``b = B/N`` rows forms exactly
those groups (:func:`shard_rows`). Without a minibatch-stddev layer ``g = 1`` and the slices are plain rows.

**Randomness** is drawn for the global batch on every rank (a few numbers) and sliced; wherever a random
op runs on per-sample data inside a function that draws its own numbers, the rank's rows are placed into a
global-sized tensor first (:meth:`Shard.pad`) so the draws match the single process's.

**Failures.** The process group has a timeout (``FEWSHOT_DIST_TIMEOUT`` seconds, default 600), and every
collective here turns a backend error into :class:`DistributedError`, which names the rank, the operation and
the likely cause: a rank that dies closes its sockets and the others fail at once; a rank that hangs makes the
others fail after the timeout, instead of the job waiting forever.

Launch: ``torchrun --nproc_per_node=N script.py ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` reads them (gloo on CPU, nccl on CUDA). With none
of them set everything here is a no-op and the trainers run their single-process code unchanged.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "DistributedError",
    "init_from_env",
    "is_initialized",
    "world_size",
    "rank",
    "is_main",
    "barrier",
    "rank0_decides",
    "shard_rows",
    "Shard",
    "all_reduce_grads",
    "all_reduce_mean",
    "all_gather",
    "broadcast_module",
    "broadcast_rng",
    "SyncBatchNorm2d",
    "sync_batchnorm",
]

DEFAULT_TIMEOUT_S = 600.0
T = TypeVar("T")


class DistributedError(RuntimeError):
    """A collective failed: another rank died, hung past the timeout, or the ranks disagree on shapes."""


def _timeout_s() -> float:
    return float(os.environ.get("FEWSHOT_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def is_main() -> bool:
    """Whether this rank writes checkpoints, samples, metrics and logs (rank 0, or the only process)."""
    return rank() == 0


def init_from_env(device: str | torch.device = "cpu", timeout_s: float | None = None) -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment; return this rank's device.

    Without ``WORLD_SIZE`` > 1 nothing happens and ``device`` comes back as it is. With it: backend nccl when
    ``device`` is CUDA (each rank on ``cuda:LOCAL_RANK``), gloo otherwise; ``timeout_s`` (default
    ``FEWSHOT_DIST_TIMEOUT`` or 600 s) bounds how long a collective waits for a rank that stopped responding.
    """
    device = torch.device(device)
    n = int(os.environ.get("WORLD_SIZE", "1"))
    if n <= 1:
        return device
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE={n} but {', '.join(missing)} not set: launch with torchrun --nproc_per_node={n}"
        )
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s if timeout_s is not None else _timeout_s())
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            timeout=timeout,
            device_id=device if device.type == "cuda" else None,
        )
        log.info("rank %d of %d on %s (%s)", rank(), world_size(), device, dist.get_backend())
    return device


def _run(what: str, fn: Callable[[], T]) -> T:
    """Run one collective; a backend error becomes a :class:`DistributedError` that says what probably happened."""
    try:
        return fn()
    except (RuntimeError, dist.DistError) as err:
        if isinstance(err, DistributedError):
            raise
        raise DistributedError(
            f"rank {rank()} of {world_size()}: {what} failed — another rank died or stopped responding "
            f"(timeout {_timeout_s():.0f} s, FEWSHOT_DIST_TIMEOUT); the job stops here. "
            f"Backend said: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err


def _comm_device(t: torch.Tensor) -> torch.device:
    """nccl reduces CUDA tensors only; gloo takes CPU tensors (and CUDA ones)."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written the checkpoint the others will read)."""
    if world_size() > 1:
        _run("barrier", dist.barrier)


def rank0_decides(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank: for decisions that must agree, like "is there time for another chunk?"
    (each rank's own clock could say otherwise, and a rank that stops early would leave the others waiting)."""
    if world_size() <= 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    t = t.to(_comm_device(t))
    _run("broadcast of a decision", lambda: dist.broadcast(t, 0))
    return bool(t.item())


# ----------------------------------------------------------------------------------------------------------
# A rank's share of the batch
# ----------------------------------------------------------------------------------------------------------


def shard_rows(batch: int, n_ranks: int, this_rank: int, group: int = 1) -> torch.Tensor:
    """Indices ``[batch / n_ranks]`` of the global batch that ``this_rank`` computes.

    ``group``: the size of the strided minibatch-stddev groups (sample ``j`` in group ``j mod batch/group``); a
    rank takes a contiguous slice of the groups, ordered so that its own strided grouping of the rows it gets
    forms the same groups. ``group = 1``: a contiguous slice of the rows.

    >>> shard_rows(8, 2, 0, group=4).tolist()  # groups {0,2,4,6} and {1,3,5,7}: rank 0 takes the first
    [0, 2, 4, 6]
    >>> shard_rows(8, 2, 1).tolist()
    [4, 5, 6, 7]
    """
    if batch % group:
        raise ValueError(f"batch {batch} is not a multiple of the minibatch-stddev group {group}")
    n_groups = batch // group
    if n_groups % n_ranks and group == 1:
        raise ValueError(f"batch {batch} cannot be split evenly over {n_ranks} ranks")
    if n_groups % n_ranks:
        raise ValueError(
            f"batch {batch} cannot be split over {n_ranks} ranks: its {n_groups} minibatch-stddev groups "
            f"(of {group}) must divide evenly; use a global batch that is a multiple of {group * n_ranks}"
        )
    per = n_groups // n_ranks
    members = torch.arange(group)[:, None] * n_groups  # [g, 1]: offsets of a group's members
    groups = torch.arange(this_rank * per, (this_rank + 1) * per)[None, :]  # [1, per]
    return (members + groups).flatten()  # [g·per]: member-major, as the stddev layer's view(g, -1) reads


@dataclass(frozen=True)
class Shard:
    """This rank's ``rows`` of a global batch of ``batch`` samples (see :func:`shard_rows`)."""

    rows: torch.Tensor  # [b] long
    batch: int

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, ...]`` → this rank's rows ``[b, ...]``."""
        if x.shape[0] != self.batch:
            raise ValueError(f"expected a global batch of {self.batch}, got {tuple(x.shape)}")
        return x[self.rows.to(x.device)]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows ``[b, ...]`` → ``[batch, ...]`` with zeros elsewhere (differentiable w.r.t. ``x``), so a
        function that draws per-sample random numbers draws them for the global batch."""
        out = x.new_zeros((self.batch, *x.shape[1:]))
        return out.index_copy(0, self.rows.to(x.device), x)

    def around(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``fn`` applied as if to the global batch, on this rank's rows: ``take(fn(pad(x)))``."""
        return self.take(fn(self.pad(x)))


# ----------------------------------------------------------------------------------------------------------
# Collectives
# ----------------------------------------------------------------------------------------------------------


def all_reduce_grads(params: Iterable[torch.Tensor]) -> None:
    """Average the ``.grad`` of ``params`` over the ranks, in place (one flat all-reduce). Parameters without a
    gradient are skipped — the same ones on every rank, since every rank runs the same graph."""
    n = world_size()
    if n <= 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    comm = flat.to(_comm_device(flat))
    _run(f"all-reduce of {flat.numel()} gradients", lambda: dist.all_reduce(comm))
    flat = comm.to(flat.device).div_(n)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the ranks (a new tensor; the same on every rank)."""
    if world_size() <= 1:
        return values.clone()
    comm = values.detach().clone().to(_comm_device(values))
    _run("all-reduce of the logged values", lambda: dist.all_reduce(comm))
    return comm.to(values.device) / world_size()


def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x [b, ...]`` along dim 0, rank order → ``[N·b, ...]``."""
    if world_size() <= 1:
        return x
    comm = x.detach().contiguous().to(_comm_device(x))
    parts = [torch.empty_like(comm) for _ in range(world_size())]
    _run("all-gather", lambda: dist.all_gather(parts, comm))
    return torch.cat(parts).to(x.device)


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (in place)."""
    if world_size() <= 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            comm = t.detach().clone().to(_comm_device(t))
            _run("broadcast of the weights", lambda c=comm: dist.broadcast(c, src))
            t.copy_(comm.to(t.device))


def broadcast_rng(device: torch.device | None = None) -> None:
    """Give every rank rank 0's torch (CPU and, on CUDA, ``device``'s) and Python random states, so that the
    draws the models make themselves (G's noise, the style-mixing layer) agree across ranks."""
    if world_size() <= 1:
        return
    import random

    state = [torch.get_rng_state(), random.getstate()]
    if device is not None and device.type == "cuda":
        state.append(torch.cuda.get_rng_state(device))
    comm_dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    _run("broadcast of the random state", lambda: dist.broadcast_object_list(state, 0, device=comm_dev))
    torch.set_rng_state(state[0])
    random.setstate(state[1])
    if len(state) > 2:
        torch.cuda.set_rng_state(state[2], device)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is the sum of the gradients over ranks (each rank's loss depends on every
    rank's contribution)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        comm = x.detach().clone().to(_comm_device(x))
        _run("all-reduce of batch statistics", lambda: dist.all_reduce(comm))
        return comm.to(x.device)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad.contiguous())


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training-mode statistics are those of the global batch (every rank's rows).

    Same parameters, buffers and state-dict keys as ``BatchNorm2d`` — :func:`sync_batchnorm` turns existing
    layers into it in place, so checkpoints do not change. PyTorch's own ``SyncBatchNorm`` runs on GPUs only;
    this one works with gloo on CPU too (two small all-reduces per layer: the sums, then the squared deviations,
    so the variance is computed as the single process computes it). With one rank, or in eval mode, it is
    ``BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C, H, W]
        if not self.training or world_size() <= 1:
            return super().forward(x)
        n_local = x.shape[0] * x.shape[2] * x.shape[3]
        n = n_local * world_size()
        mean = _AllReduceSum.apply(x.sum((0, 2, 3))) / n  # [C]
        centred = x - mean[None, :, None, None]
        var = _AllReduceSum.apply(centred.pow(2).sum((0, 2, 3))) / n  # [C], biased (for normalising)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), f)
                self.running_var.lerp_(var.detach() * n / max(n - 1, 1), f)  # unbiased, as F.batch_norm
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Turn every ``nn.BatchNorm2d`` in ``module`` into :class:`SyncBatchNorm2d` in place (the class only: the
    same parameter objects, so optimisers and state dicts are unaffected). Returns ``module``."""
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = SyncBatchNorm2d
    return module
