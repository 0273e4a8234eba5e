"""Small helpers shared by the trainers, the methods and the projector (any generator / discriminator).

They sit below ``train.py`` and ``methods/`` so that every layer above can use them without importing a
sibling: freezing a module for one step, the EMA update of ``G_ema``, and calling a (rosinality-style)
generator for images with or without its per-layer features.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

__all__ = ["frozen", "accumulate", "generate", "generate_with_features"]


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Inside the block no parameter of ``module`` gets a gradient; afterwards each gets back its own flag.

    Gradients still flow *through* the module to its inputs (a G step backpropagates through a frozen D).
    Restoring each parameter's own flag, not ``True`` for all, keeps deliberately frozen layers frozen.
    """
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


@torch.no_grad()
def accumulate(target: nn.Module, source: nn.Module, decay: float) -> None:
    """EMA update ``target ← decay·target + (1-decay)·source`` for parameters; buffers are copied."""
    for pt, ps in zip(target.parameters(), source.parameters()):
        pt.lerp_(ps.detach(), 1.0 - decay)
    for bt, bs in zip(target.buffers(), source.buffers()):
        bt.copy_(bs)


def generate(generator: nn.Module, z: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """``z [B, z_dim]`` (or a list of two for style mixing) → images ``[B, 3, H, W]`` (fresh noise maps)."""
    return generator(z)[0]


def generate_with_features(generator: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``z [B, z_dim]`` → ``(images [B,3,H,W], features)``: one ``[B, C_l, H_l, W_l]`` per styled conv."""
    image, _, features = generator(z, return_features=True)
    return image, list(features)
