"""Class conditioning for StyleGAN2 (StyleGAN2-ADA's layout), the base of LSO.

A class-conditional StyleGAN2 feeds its mapping network with a normalised latent *and* a normalised class
embedding side by side::

    x = [ σ · ẑ , ê(c) ]        ẑ = z / rms(z),   ê(c) = e(c) / rms(e(c)),   w = MLP(x)

where ``e(c)`` is column ``c`` of a learned table. Two consequences LSO builds on:

* **the class centroid**: with σ = 0 the latent part vanishes and ``w_c = MLP([0, ê(c)])`` depends on the
  class only — the centre of the class's region of W;
* **the magnitude**: a sample with ``σ·ẑ`` lies on a sphere of radius σ·√dim around that centre (in the
  normalised input), so σ < 1 stays closer to the class's typical image and σ = 1 is ordinary sampling.

The discriminator is conditioned by *projection*: its last layer yields a vector ``h(x)``, a small mapping
network turns the class into ``m(c)`` of the same size, and the score is ``h(x)·m(c) / √dim``.

This module holds the pieces that are new; :mod:`fewshot_lib.models.stylegan2` composes them into
``Generator(c_dim=...)`` and ``Discriminator(c_dim=...)``. Classes are given as **indices** ``[B]`` (int64),
looked up in the table — so appending a class column (LSO's first step) leaves every existing class's
embedding, and therefore every seen-class output, bit-identical.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["normalize_2nd_moment", "ClassEmbedding", "check_class_indices"]


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``x / rms(x)`` along dim 1: ``[B, D] → [B, D]`` with mean square 1 per row (a zero row stays zero)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def check_class_indices(c: torch.Tensor | None, n_classes: int, batch: int) -> torch.Tensor:
    """Validate class indices ``[B]`` for a model with ``n_classes`` classes (clear errors, no silent casts)."""
    if c is None:
        raise ValueError(f"this model is class-conditional ({n_classes} classes): pass c, class indices [B]")
    if not isinstance(c, torch.Tensor) or c.dtype not in (torch.int64, torch.int32) or c.dim() != 1:
        got = f"{c.dtype} {tuple(c.shape)}" if isinstance(c, torch.Tensor) else type(c).__name__
        raise ValueError(f"c must be class indices, an int64 tensor [B]; got {got}")
    if len(c) != batch:
        raise ValueError(f"c holds {len(c)} classes for a batch of {batch}")
    if len(c) and (int(c.min()) < 0 or int(c.max()) >= n_classes):
        raise ValueError(f"class indices must be in [0, {n_classes}); got {int(c.min())}..{int(c.max())}")
    return c.long()


class ClassEmbedding(nn.Module):
    """A learned table of class vectors, ``[B] → [B, dim]``, with StyleGAN2's equalised learning rate.

    The weight is stored as ``[dim, n_classes]`` drawn from N(0, 1) and multiplied by a fixed gain at run time
    (``1/√n_classes`` at construction, as a linear layer on one-hot inputs would). The gain stays fixed when
    classes are added (StyleGAN2-ADA's code rebuilds the layer and lets it change to ``1/√(n+1)``; keeping it
    is what makes the seen classes' outputs bit-identical after an extension); it is saved with the weights.
    """

    def __init__(self, n_classes: int, dim: int):
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"a conditional model needs n_classes ≥ 1, got {n_classes}")
        self.weight = nn.Parameter(torch.randn(dim, n_classes))
        self.bias = nn.Parameter(torch.zeros(dim))
        # A buffer, so that a model saved after add_class() reloads with the gain it was trained with.
        self.register_buffer("gain", torch.tensor(1.0 / math.sqrt(n_classes)))

    @property
    def n_classes(self) -> int:
        return self.weight.shape[1]

    def forward(self, c: torch.Tensor) -> torch.Tensor:  # [B] int64 -> [B, dim]
        c = check_class_indices(c, self.n_classes, len(c) if isinstance(c, torch.Tensor) else 0)
        return self.weight.t()[c] * self.gain + self.bias

    @torch.no_grad()
    def add_class(self, generator: torch.Generator | None = None) -> int:
        """Append one class column drawn from N(0, 1) (LSO's new class); returns its index."""
        column = torch.randn(self.weight.shape[0], 1, generator=generator).to(self.weight)
        self.weight = nn.Parameter(torch.cat([self.weight.data, column], dim=1))
        return self.n_classes - 1

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}, dim={self.weight.shape[0]}, gain={float(self.gain):.4f}"
