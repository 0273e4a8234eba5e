"""Differentiable augmentation for data-efficient GAN training: DiffAugment + an ADA-style adaptive probability.

**Why.** With few images the discriminator memorises them and its feedback to G becomes useless. Augmenting
only the real images would teach G to *generate* augmented images (the augmentation "leaks"). DiffAugment
(Zhao et al., NeurIPS 2020) applies the **same random, differentiable** transform to real *and* fake images
every time D sees them, in both the D and the G step; G receives gradients through the transform.

Policies (values as described in the DiffAugment paper, images in ``[-1, 1]``):

* ``color``: brightness ``+U(-0.5, 0.5)``, saturation ``×U(0, 2)`` around the pixel's grey value,
  contrast ``×U(0.5, 1.5)`` around the image mean;
* ``translation``: integer shift by up to 1/8 of the size, zero (grey) fill;
* ``cutout``: a zero square of half the size at a random place.

**ADA-style adaptation** (Karras et al., NeurIPS 2020, simplified): every transform is applied to each
image with probability ``p``, and ``p`` follows an overfitting heuristic ``r_t = E[sign(D(x_real))]``: D
is overconfident on reals when ``r_t`` exceeds the target 0.6, so ``p`` goes up, otherwise down, by
``batch·interval / speed_images`` per update. This uses the three DiffAugment ops, not ADA's 18-op pipeline.

Randomness is drawn on the CPU from an optional ``torch.Generator`` (reproducible on every device) or the
global RNG. Shapes: ``[B, C, H, W]`` → ``[B, C, H, W]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator).to(device)


def _apply_mask(
    x: torch.Tensor, y: torch.Tensor, p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Use the transformed ``y`` for a random fraction ``p`` of the samples, ``x`` elsewhere."""
    if p >= 1.0:
        return y
    keep = (_rand((x.shape[0], 1, 1, 1), generator, x.device) < p).to(x.dtype)
    return keep * y + (1 - keep) * x


def rand_brightness(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return x + (_rand((x.shape[0], 1, 1, 1), generator, x.device) - 0.5)


def rand_saturation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    grey = x.mean(1, keepdim=True)
    return (x - grey) * (_rand((x.shape[0], 1, 1, 1), generator, x.device) * 2) + grey


def rand_contrast(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    mean = x.mean([1, 2, 3], keepdim=True)
    return (x - mean) * (_rand((x.shape[0], 1, 1, 1), generator, x.device) + 0.5) + mean


def rand_translation(
    x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shift each image by an integer ``(dy, dx) ∈ [-s, s]²`` with ``s = round(ratio·size)``, zero fill."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (b, 1), generator=generator)
    dx = torch.randint(-sx, sx + 1, (b, 1), generator=generator)
    rows = (torch.arange(h)[None] + sy - dy).to(x.device)  # [B, H] indices into the padded image
    cols = (torch.arange(w)[None] + sx - dx).to(x.device)  # [B, W]
    padded = F.pad(x, [sx, sx, sy, sy])  # [B, C, H + 2sy, W + 2sx]
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = padded[bi, :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2)


def rand_cutout(
    x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero a ``ratio·H × ratio·W`` square per image; its centre is uniform over the image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + 1 - ch % 2, (b, 1, 1), generator=generator).to(x.device)
    cx = torch.randint(0, w + 1 - cw % 2, (b, 1, 1), generator=generator).to(x.device)
    yy = torch.arange(h, device=x.device)[None, :, None]
    xx = torch.arange(w, device=x.device)[None, None, :]
    inside = ((yy - cy).abs() * 2 < ch) & ((xx - cx).abs() * 2 < cw)  # [B, H, W]
    return x * (~inside).unsqueeze(1).to(x.dtype)


def parse_policy(policy: str | None) -> list[str]:
    """``"color,translation,cutout"`` → list; raises ``ValueError`` naming an unknown op."""
    if not policy:
        return []
    ops = [p.strip() for p in policy.split(",") if p.strip()]
    bad = [p for p in ops if p not in POLICIES]
    if bad:
        raise ValueError(f"Unknown DiffAugment op(s) {bad} in policy={policy!r}; choose from {POLICIES}.")
    return ops


def diff_augment(
    x: torch.Tensor,
    policy: str | None = "color,translation,cutout",
    p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply the ops of ``policy`` in order, each to a random fraction ``p`` of the batch (``p=1``: all)."""
    ops = parse_policy(policy)
    if not ops or p <= 0:
        return x
    for op in ops:
        if op == "color":
            y = rand_contrast(rand_saturation(rand_brightness(x, generator), generator), generator)
        elif op == "translation":
            y = rand_translation(x, generator=generator)
        else:
            y = rand_cutout(x, generator=generator)
        x = _apply_mask(x, y, p, generator)
    return x


class AdaptiveAugment:
    """ADA-style controller of the augmentation probability ``p`` (see module docstring).

    Call :meth:`update` with D's logits on *real* images every step; ``p`` moves every ``interval`` steps.
    ``speed_images``: images needed to move ``p`` by 1 (NVlabs uses 500k; short CPU runs need less).
    """

    def __init__(self, target: float = 0.6, speed_images: int = 20_000, interval: int = 4, p: float = 0.0):
        if not 0 < target < 1:
            raise ValueError(f"AdaptiveAugment target={target} must be in (0, 1).")
        self.target, self.speed_images, self.interval, self.p = target, speed_images, interval, p
        self._sum, self._n, self._steps, self.rt = 0.0, 0, 0, 0.0

    def update(self, real_logits: torch.Tensor) -> float:
        """Accumulate ``sign(D(real))``; adjust and return ``p``."""
        self._sum += torch.sign(real_logits.detach()).sum().item()
        self._n += real_logits.numel()
        self._steps += 1
        if self._steps % self.interval == 0 and self._n:
            self.rt = self._sum / self._n
            batch = real_logits.shape[0]
            step = batch * self.interval / self.speed_images
            self.p = float(min(1.0, max(0.0, self.p + (step if self.rt > self.target else -step))))
            self._sum, self._n = 0.0, 0
        return self.p

    def state_dict(self) -> dict:
        return {
            "p": self.p,
            "rt": self.rt,
            "sum": self._sum,
            "n": self._n,
            "steps": self._steps,
            "target": self.target,
            "speed_images": self.speed_images,
            "interval": self.interval,
        }

    def load_state_dict(self, s: dict) -> None:
        self.p, self.rt, self._sum, self._n, self._steps = s["p"], s["rt"], s["sum"], s["n"], s["steps"]
        self.target, self.speed_images, self.interval = s["target"], s["speed_images"], s["interval"]
