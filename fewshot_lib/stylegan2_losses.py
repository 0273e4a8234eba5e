"""StyleGAN2's training losses and regularisers, one small function each.

* **Non-saturating logistic loss** (Goodfellow et al. 2014): D minimises ``softplus(-D(x)) + softplus(D(G(z)))``
  (binary cross-entropy on logits); G minimises ``softplus(-D(G(z)))``, which has strong gradients exactly
  when D confidently rejects the fakes (the saturating ``-softplus(D(G(z)))`` would vanish there).
* **R1** (Mescheder et al. 2018): penalise ``‖∇ₓ D(x)‖²`` on *real* images only, which keeps D smooth on
  the data manifold; weight ``γ/2``. **Lazy**: computed every ``k`` steps and multiplied by ``k``.
* **Path-length regularisation** (StyleGAN2 §3.2): a fixed-size step in W should move the image by a fixed
  amount, in every direction. With ``y ~ N(0, I)/√(HW)``, ``J_wᵀ y = ∂(Σ G(w)·y)/∂w`` and
  ``a`` a running mean of ``‖J_wᵀ y‖``, the penalty is ``(‖J_wᵀ y‖ - a)²``. ``a`` is state: it is kept in
  :class:`PathLengthState` and saved in checkpoints (rosinality does not save it, so every resume there
  restarts with a large penalty).
* **Style mixing** (StyleGAN §3.1): with probability 0.9 feed two z's, switching at a random layer, so that
  neighbouring layers do not learn to depend on each other.

Shapes: logits ``[B, 1]`` (or ``[B, 1, h, w]`` for patch discriminators; means are taken over all entries).
They belong to the training layer: :class:`fewshot_lib.train.GANTrainer` uses them and every method builds on it.
Taught in: ``notebooks/02_stylegan2_training.ipynb``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "d_logistic_loss",
    "g_nonsaturating_loss",
    "r1_penalty",
    "PathLengthState",
    "path_length_penalty",
    "mixing_noise",
    "lazy_adam_params",
]


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``E[softplus(-D(x))] + E[softplus(D(G(z)))]`` → scalar."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``E[softplus(-D(G(z)))]`` → scalar."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """``E_x ‖∇ₓ D(x)‖²`` (sum over C·H·W, mean over the batch) → scalar.

    ``real_images`` must have ``requires_grad=True`` and ``real_logits`` must be computed from them. The graph
    is kept (``create_graph=True``) so the penalty can be back-propagated into D's weights.
    """
    if not real_images.requires_grad:
        raise ValueError("r1_penalty: real_images must have requires_grad=True before D is applied to them.")
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


@dataclass
class PathLengthState:
    """Running mean ``a`` of path lengths (``mean``) and its decay (``0.01``); checkpointed by the trainer."""

    mean: float = 0.0
    decay: float = 0.01

    def state_dict(self) -> dict:
        return {"mean": float(self.mean), "decay": float(self.decay)}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.decay = float(state["mean"]), float(state["decay"])


def path_length_penalty(
    images: torch.Tensor,
    latents: torch.Tensor,
    state: PathLengthState,
    generator: torch.Generator | None = None,
    *,
    y: torch.Tensor | None = None,
    batch_mean: Callable[[torch.Tensor], float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Path-length penalty and the per-sample path lengths; updates ``state.mean`` in place.

    Shapes: ``images`` ``[B, 3, H, W]`` (generated from ``latents``), ``latents`` ``[B, L, D]`` with
    ``requires_grad`` → ``(penalty scalar, lengths [B])``. ``generator`` (CPU) makes ``y`` reproducible.
    Data-parallel training passes this rank's rows of the global batch's draw as ``y`` (N(0, 1), ``[B, 3, H, W]``)
    and ``batch_mean`` (lengths → mean over every rank), so the running mean moves as in one process.
    """
    b, _, h, w = images.shape
    if y is None:
        y = torch.randn(images.shape, generator=generator)
    y = y.to(images.device) / math.sqrt(h * w)
    (grad,) = torch.autograd.grad((images * y).sum(), latents, create_graph=True)  # [B, L, D]
    lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))  # [B]
    mean = batch_mean(lengths.detach()) if batch_mean else lengths.detach().mean().item()
    new_mean = state.mean + state.decay * (mean - state.mean)
    penalty = (lengths - new_mean).pow(2).mean()
    state.mean = new_mean
    return penalty, lengths.detach()


def mixing_noise(
    batch: int,
    dim: int,
    prob: float,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> list[torch.Tensor]:
    """One z ``[B, D]`` or, with probability ``prob``, two (style mixing) — drawn on CPU, then moved."""
    n = 2 if prob > 0 and torch.rand((), generator=generator).item() < prob else 1
    return [torch.randn(batch, dim, generator=generator).to(device) for _ in range(n)]


def lazy_adam_params(lr: float, betas: tuple[float, float], every: int) -> tuple[float, tuple[float, float]]:
    """Adam settings that compensate lazy regularisation every ``every`` steps: ``lr·c``, ``β^c``, c=k/(k+1)."""
    if every <= 0:
        return lr, betas
    c = every / (every + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)
