"""StyleGAN2 (Karras et al., CVPR 2020) in one readable, pure-PyTorch file.

**The idea.** A *mapping network* turns a Gaussian code ``z`` into an intermediate latent ``w`` that is free to
follow the data's own (non-Gaussian) factors of variation. A *synthesis network* then starts from a learned
constant ``4×4`` tensor and doubles the resolution block by block. Every convolution is **modulated** by ``w``:
each input channel of the kernel is scaled by a per-sample "style" ``s = A(w)``; the kernel is then
**demodulated** (each output channel's weights are rescaled to unit norm), which keeps activations at unit
variance without StyleGAN1's AdaIN and removes its "droplet" artefacts. Per-pixel **noise** adds stochastic
detail (hair, texture) that the styles need not encode. Each resolution adds an RGB image (``ToRGB``) to the
up-sampled image of the previous resolution (the **skip** generator). The **discriminator** is a residual
network with a **minibatch standard deviation** feature that lets it notice a collapsed (too uniform) batch.

All weights use the **equalised learning rate**: they are stored as ``N(0, 1)`` and multiplied at run time by
the He constant ``1/sqrt(fan_in)``, so Adam sees every layer at the same scale. The mapping network further
multiplies its learning rate by ``lr_mul = 0.01`` (stored weights are divided by it).

**Compatibility.** Module, parameter and buffer names and shapes follow rosinality/stylegan2-pytorch (the code
base of CDC and MixDL), so its ``.pt`` checkpoints load here with ``strict=True`` and our state dicts load
there; reading and writing files (rosinality's and the project's export format) is
:mod:`fewshot_lib.models.stylegan2_io`, the shipped models are in :mod:`fewshot_lib.artifacts`. The defaults at a given ``size`` are the official
config-f architecture (``channel_multiplier=2``, 512-d latents, 8 mapping layers). For CPU labs the width is
set with ``channel_base`` / ``channel_max`` (NVlabs' convention: ``channels(res) = min(channel_base // res,
channel_max)``; ``channel_base = 16384·channel_multiplier`` reproduces rosinality's table exactly).

No custom CUDA ops: blur, up- and down-sampling are depthwise convolutions, so the same code runs on CPU,
CUDA and MPS, and supports double backward (needed by R1 and path-length regularisation).

Shapes below use ``B`` = batch, ``C``/``I``/``O`` = channels, ``D`` = ``style_dim``, ``L`` = ``n_latent``.

Taught in: ``notebooks/01_stylegan2_building_blocks.ipynb`` and ``02_stylegan2_training.ipynb``.
"""

from __future__ import annotations

import importlib
import logging
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .conditional import ClassEmbedding, normalize_2nd_moment

log = logging.getLogger(__name__)

SQRT2 = math.sqrt(2.0)


# ---------------------------------------------------------------------------------------------------------
# 1. Low-level ops: activation with bias, blur kernels, FIR up/down-sampling
# ---------------------------------------------------------------------------------------------------------


def fused_leaky_relu(
    x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2, scale: float = SQRT2
) -> torch.Tensor:
    """``lrelu(x + bias, 0.2) · √2`` with ``bias`` broadcast over channel dim 1.

    The ``√2`` gain restores the variance that leaky-ReLU halves, so unit-variance inputs stay unit-variance.
    Shapes: ``x`` ``[B, C, ...]``, ``bias`` ``[C]`` → ``[B, C, ...]``.
    """
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Bias + leaky-ReLU + ``√2`` gain. The bias lives here (key ``bias``), as in rosinality."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, ...] -> [B, C, ...]
        return fused_leaky_relu(x, self.bias)


def make_kernel(k: Sequence[float]) -> torch.Tensor:
    """A normalised 2-D FIR kernel from a 1-D one: ``[1,3,3,1]`` → outer product / sum, shape ``[4, 4]``."""
    k = torch.tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter with ``kernel``, downsample by striding — per channel.

    This is the reference definition of the FIR resampling StyleGAN uses (``pad = (before, after)`` on both
    axes, non-negative here). The kernel is flipped so that it is applied as a true convolution.
    Shapes: ``x`` ``[B, C, H, W]``, ``kernel`` ``[kh, kw]`` →
    ``[B, C, (H·up + p0 + p1 - kh) // down + 1, (W·up + p0 + p1 - kw) // down + 1]``.
    """
    b, c, h, w = x.shape
    if up > 1:  # zero insertion: sample i lands at position i·up
        z = x.new_zeros(b, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    p0, p1 = pad
    if p0 or p1:
        x = F.pad(x, [p0, p1, p0, p1])
    weight = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, stride=down, groups=c)


class Blur(nn.Module):
    """Low-pass filter (a ``[4, 4]`` binomial kernel, buffer ``kernel``) with explicit padding.

    Used after a transposed convolution (``upsample_factor=2``: the kernel is multiplied by 4 to keep the
    image's mean, since zero insertion left 3 of 4 pixels empty) and before a strided one (anti-aliasing).
    """

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C, H + p0 + p1 - 3, ...]
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """×2 FIR up-sampling (used for the RGB skip path): ``[B, C, H, W]`` → ``[B, C, 2H, 2W]``."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Downsample(nn.Module):
    """×2 FIR down-sampling: ``[B, C, H, W]`` → ``[B, C, H/2, W/2]``."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel))
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, down=self.factor, pad=self.pad)


# ---------------------------------------------------------------------------------------------------------
# 2. Equalised-learning-rate layers
# ---------------------------------------------------------------------------------------------------------


class PixelNorm(nn.Module):
    """Normalise each latent vector to unit root-mean-square: ``[B, D]`` → ``[B, D]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate and a learning-rate multiplier.

    Stored weight ``~ N(0, 1/lr_mul²)``; run-time weight ``W · lr_mul/√in``; run-time bias ``b · lr_mul``.
    ``activation="fused_lrelu"`` adds the bias inside the leaky-ReLU (``√2`` gain).
    Shapes: ``[B, in_dim]`` → ``[B, out_dim]``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: str | None = None,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, act={self.activation}"


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate: run-time weight ``W / √(I·k²)``.

    Shapes: ``[B, I, H, W]`` → ``[B, O, (H + 2p - k)/stride + 1, ...]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, k={k}, stride={self.stride}, padding={self.padding}"


# ---------------------------------------------------------------------------------------------------------
# 3. Generator blocks
# ---------------------------------------------------------------------------------------------------------


class ModulatedConv2d(nn.Module):
    """The heart of StyleGAN2: a convolution whose kernel is modulated by a per-sample style.

    1. **Modulate**: ``s = A(w)`` (an affine ``EqualLinear`` from ``D`` to ``I`` with bias 1, so styles
       start near 1); ``W'[b,o,i] = W[o,i] · s[b,i] / √(I·k²)``.
    2. **Demodulate**: ``W''[b,o] = W'[b,o] / ‖W'[b,o]‖`` — if the inputs have unit variance, so do the
       outputs. This replaces AdaIN's normalisation of *activations* by one of *weights*.
    3. Convolve each sample with its own kernel. ``fused=True`` does this as **one grouped convolution**
       (``groups = B``) over a ``[1, B·I, H, W]`` input; ``fused=False`` scales the activations instead
       (``x·s``, shared-weight conv, output ``·d``) — the same maths, one big GEMM, measured 1.1–1.6× faster
       on CPU here. ``fused=None`` (default) picks the scaled form on CPU and the grouped one on GPUs.
       Both are exact; tests check them against a per-sample loop.

    ``upsample=True``: transposed conv with stride 2, then a ``[1,3,3,1]`` blur (doubles ``H, W``).
    Shapes: ``x`` ``[B, I, H, W]``, ``style`` ``[B, D]`` → ``[B, O, H', W']``.
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        fused: bool | None = None,
    ):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.demodulate, self.upsample, self.fused = demodulate, upsample, fused
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channel}, {self.out_channel}, k={self.kernel_size}, upsample={self.upsample}, "
            f"demodulate={self.demodulate}, fused={self.fused}"
        )

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, i, h, w = x.shape
        s = self.modulation(style)  # [B, I]
        fused = self.fused if self.fused is not None else x.device.type != "cpu"
        if fused:
            return self._forward_grouped(x, s)
        return self._forward_scaled(x, s)

    def _forward_grouped(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        b, i, h, w = x.shape
        o, k = self.out_channel, self.kernel_size
        weight = self.scale * self.weight * s.view(b, 1, i, 1, 1)  # [B, O, I, k, k]
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)  # [B, O]
            weight = weight * demod.view(b, o, 1, 1, 1)
        x = x.reshape(1, b * i, h, w)
        if self.upsample:
            # conv_transpose2d wants [in, out/groups, k, k]: one group per sample
            weight = weight.transpose(1, 2).reshape(b * i, o, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, padding=0, groups=b)  # [1, B·O, 2H+1, 2W+1]
            out = self.blur(out.view(b, o, *out.shape[2:]))  # [B, O, 2H, 2W]
            return out
        out = F.conv2d(x, weight.reshape(b * o, i, k, k), padding=self.padding, groups=b)
        return out.view(b, o, h, w)

    def _forward_scaled(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        weight = self.scale * self.weight[0]  # [O, I, k, k]
        x = x * s.view(b, -1, 1, 1)  # modulate the activations instead of the weights
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=0)  # [B, O, 2H+1, 2W+1]
        else:
            out = F.conv2d(x, weight, padding=self.padding)  # [B, O, H, W]
        if self.demodulate:
            # ‖W'[b,o]‖² = Σ_i s[b,i]² · Σ_k W[o,i,k]²  → [B, O]
            demod = torch.rsqrt(s.pow(2) @ weight.pow(2).sum([2, 3]).t() + 1e-8)
            out = out * demod.view(b, -1, 1, 1)
        if self.upsample:
            out = self.blur(out)  # per-channel and linear, so it commutes with the demodulation scale
        return out


class NoiseInjection(nn.Module):
    """Add per-pixel Gaussian noise scaled by one learned strength (``weight``, starts at 0).

    Shapes: ``x`` ``[B, C, H, W]``, ``noise`` ``[B or 1, 1, H, W]`` (drawn fresh when ``None``) → ``[B, C, H, W]``.
    """

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = x.shape
            noise = x.new_empty(b, 1, h, w).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned ``[1, C, 4, 4]`` tensor the synthesis network starts from, repeated over the batch."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:  # -> [B, C, 4, 4]
        return self.input.repeat(batch, 1, 1, 1)


class StyledConv(nn.Module):
    """Modulated conv → noise → bias + leaky-ReLU [→ clamp]. ``[B, I, H, W]`` → ``[B, O, H or 2H, W or 2W]``.

    ``conv_clamp`` (NVlabs' option, 256 in their configs; ``None`` here by default) clamps the activated output
    to ``[-conv_clamp, conv_clamp]``: it keeps fp16 activations finite, and an NVlabs model converted to this
    package needs it to reproduce outputs wherever activations exceed it.
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        demodulate: bool = True,
        fused: bool | None = None,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.conv = ModulatedConv2d(
            in_channel,
            out_channel,
            kernel_size,
            style_dim,
            demodulate=demodulate,
            upsample=upsample,
            blur_kernel=blur_kernel,
            fused=fused,
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self.activate(self.noise(self.conv(x, style), noise))
        return out if self.conv_clamp is None else out.clamp(-self.conv_clamp, self.conv_clamp)


class ToRGB(nn.Module):
    """A 1×1 modulated conv (no demodulation) to RGB, plus the up-sampled RGB of the previous resolution.

    Shapes: ``x`` ``[B, C, H, W]``, ``style`` ``[B, D]``, ``skip`` ``[B, 3, H/2, W/2]`` → ``[B, 3, H, W]``.
    ``conv_clamp`` clamps ``conv + bias`` before the skip is added (NVlabs' order).
    """

    def __init__(
        self,
        in_channel: int,
        style_dim: int,
        upsample: bool = True,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        fused: bool | None = None,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False, fused=fused)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if self.conv_clamp is not None:
            out = out.clamp(-self.conv_clamp, self.conv_clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


def channel_table(
    size: int, channel_multiplier: int = 2, channel_base: int | None = None, channel_max: int = 512
) -> dict[int, int]:
    """Channels per resolution ``{4: .., 8: .., ..., size: ..}``: ``min(channel_base // res, channel_max)``.

    ``channel_base=None`` means ``16384 · channel_multiplier``, which with ``channel_max=512`` is exactly
    rosinality's (and the official config-e/f) table: 512 up to 32 px, then halving.
    """
    check_size(size)
    base = 16384 * channel_multiplier if channel_base is None else channel_base
    return {2**r: max(1, min(base // 2**r, channel_max)) for r in range(2, int(math.log2(size)) + 1)}


def check_size(size: int) -> int:
    """Raise ``ValueError`` unless ``size`` is a power of two ≥ 16 (a power of two ≥ 8 works but is untested)."""
    if not isinstance(size, int) or size < 8 or size & (size - 1):
        raise ValueError(
            f"size={size!r}: StyleGAN2 needs a power-of-two image size >= 16 (e.g. 32, 64, 256)."
        )
    return size


class NoiseBuffers(nn.Module):
    """Fixed noise maps ``noise_0 .. noise_{n-1}`` (buffers ``[1, 1, r, r]``) for ``randomize_noise=False``."""

    def __init__(self, size: int):
        super().__init__()
        n_layers = (int(math.log2(size)) - 2) * 2 + 1
        for i in range(n_layers):
            r = 2 ** ((i + 5) // 2)  # 4, 8, 8, 16, 16, ...
            self.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))

    def as_list(self) -> list[torch.Tensor]:
        return [getattr(self, f"noise_{i}") for i in range(len(self._buffers))]


# ---------------------------------------------------------------------------------------------------------
# 4. Generator
# ---------------------------------------------------------------------------------------------------------


def _with_table_c_dim(config: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """A copy of ``config`` whose ``c_dim`` is the model's class count as its table holds it (one source of
    truth: a class added through the table itself, e.g. ``class_embed.add_class()``, cannot leave a stale
    number that would rebuild the wrong shape on load)."""
    config = dict(config)
    if getattr(model, "class_embed", None) is not None:
        config["c_dim"] = model.class_embed.n_classes
    return config


class Generator(nn.Module):
    """StyleGAN2 generator: mapping network ``style`` (z → w) + skip synthesis network (w → image).

    Args:
        size: output resolution, a power of two ≥ 16.
        style_dim: dimension ``D`` of z and w (512 official).
        n_mlp: mapping depth (8 official).
        channel_multiplier, channel_base, channel_max: width, see :func:`channel_table`.
        lr_mlp: learning-rate multiplier of the mapping network (0.01).
        fused: modulated-conv implementation: True = grouped conv, False = activation scaling, None = auto
            (scaling on CPU, grouped on GPU). Same result either way.
        c_dim: number of classes of a **class-conditional** generator (0: unconditional). The mapping then reads
            ``[σ·ẑ, ê(c)]`` — the normalised z scaled by a ``magnitude`` σ (1 by default) beside the normalised
            class embedding (StyleGAN2-ADA's layout, :mod:`fewshot_lib.models.conditional`) — and every call
            that maps z takes ``c``, class indices ``[B]``.

    Layers and latents: ``n_latent = 2·log2(size) - 2`` w's are consumed — ``conv1`` uses w[0], ``to_rgb1``
    w[1], then each resolution's up-conv, conv and ToRGB use w[i], w[i+1], w[i+2] with ``i`` advancing by 2
    (a ToRGB shares its w with the next block's first conv). ``num_layers = 2·log2(size) - 3`` noise maps.
    """

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        lr_mlp: float = 0.01,
        channel_base: int | None = None,
        channel_max: int = 512,
        fused: bool | None = None,
        c_dim: int = 0,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.size, self.style_dim, self.n_mlp = check_size(size), style_dim, n_mlp
        self._config = dict(
            size=size,
            style_dim=style_dim,
            n_mlp=n_mlp,
            channel_multiplier=channel_multiplier,
            blur_kernel=list(blur_kernel),
            lr_mlp=lr_mlp,
            channel_base=channel_base,
            channel_max=channel_max,
            fused=fused,
        )
        self.channels = channel_table(size, channel_multiplier, channel_base, channel_max)
        if c_dim:  # conditional: normalisation happens in mapping(), the first layer reads [σ·ẑ, ê(c)]
            self._config["c_dim"] = c_dim
            self.class_embed = ClassEmbedding(c_dim, style_dim)
            self.style = nn.Sequential(
                *[
                    EqualLinear(
                        style_dim * (2 if i == 0 else 1), style_dim, lr_mul=lr_mlp, activation="fused_lrelu"
                    )
                    for i in range(n_mlp)
                ]
            )
        else:
            self.class_embed = None
            self.style = nn.Sequential(
                PixelNorm(),
                *[
                    EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu")
                    for _ in range(n_mlp)
                ],
            )

        ch = self.channels
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=blur_kernel, fused=fused)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False, fused=fused)

        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty; kept so module names match rosinality
        self.noises = NoiseBuffers(size)
        in_ch = ch[4]
        for r in range(3, self.log_size + 1):
            out_ch = ch[2**r]
            self.convs.append(
                StyledConv(in_ch, out_ch, 3, style_dim, upsample=True, blur_kernel=blur_kernel, fused=fused)
            )
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur_kernel, fused=fused))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, blur_kernel=blur_kernel, fused=fused))
            in_ch = out_ch
        self.latent_avg: torch.Tensor | None = None  # set by loaders / mean_latent; not in the state dict
        self.set_conv_clamp(conv_clamp)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (plain values), enough to rebuild this architecture; a conditional model's
        ``c_dim`` is read from its class table, so it stays right however a class was added."""
        return _with_table_c_dim(self._config, self)

    def set_conv_clamp(self, conv_clamp: float | None) -> "Generator":
        """Clamp every styled conv's activated output and every ToRGB's ``conv + bias`` to
        ``[-conv_clamp, conv_clamp]`` (NVlabs' ``conv_clamp``); ``None`` turns clamping off. Part of
        :attr:`config` when set, so exports rebuild it."""
        return _set_conv_clamp(self, conv_clamp, lambda m: isinstance(m, (StyledConv, ToRGB)))

    def set_fused(self, fused: bool | None) -> "Generator":
        """Switch every modulated conv between the grouped and the activation-scaling implementation."""
        for m in self.modules():
            if isinstance(m, ModulatedConv2d):
                m.fused = fused
        self._config["fused"] = fused
        return self

    # -- latents -----------------------------------------------------------------------------------------
    @property
    def c_dim(self) -> int:
        """Number of classes (0 for an unconditional generator); grows with :meth:`add_class`."""
        return self.class_embed.n_classes if self.class_embed is not None else 0

    def mapping(
        self, z: torch.Tensor, c: torch.Tensor | None = None, magnitude: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """z ``[B, D]`` → w ``[B, D]``; a conditional generator also takes ``c`` (class indices ``[B]``) and a
        ``magnitude`` σ (scalar or ``[B]``/``[B, 1]``; default 1): σ = 0 gives the class centroid."""
        if self.class_embed is None:
            if c is not None or magnitude is not None:
                raise ValueError("this generator is unconditional: it takes no class c or magnitude")
            return self.style(z)
        scale = 1.0 if magnitude is None else magnitude
        if isinstance(scale, torch.Tensor) and scale.dim() == 1:
            scale = scale[:, None]
        x = torch.cat([normalize_2nd_moment(z) * scale, normalize_2nd_moment(self.class_embed(c))], dim=1)
        return self.style(x)

    @torch.no_grad()
    def add_class(self, generator: torch.Generator | None = None) -> int:
        """Append one class (a new embedding column ~ N(0, 1)); seen classes stay bit-identical. Returns its index."""
        if self.class_embed is None:
            raise ValueError(
                "add_class needs a class-conditional generator (Generator(..., c_dim=n_classes))"
            )
        return self.class_embed.add_class(generator)

    get_latent = mapping  # rosinality's name

    def make_noise(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh noise maps ``[1, 1, r, r]`` for every layer (drawn on CPU with ``generator``, then moved)."""
        dev = self.input.input.device
        return [torch.randn(n.shape, generator=generator).to(dev) for n in self.noises.as_list()]

    @torch.no_grad()
    def mean_latent(self, n_latent: int = 4096, generator: torch.Generator | None = None) -> torch.Tensor:
        """Average w of ``n_latent`` random z's, ``[1, D]`` (the centre used by the truncation trick).

        Also stored in ``self.latent_avg`` so that ``truncation < 1`` works without passing it.
        """
        dev = self.input.input.device
        z = torch.randn(n_latent, self.style_dim, generator=generator).to(dev)
        c = (
            torch.randint(0, self.c_dim, (n_latent,), generator=generator).to(dev)  # over all classes
            if self.class_embed is not None
            else None
        )
        w = self.mapping(z, c).mean(0, keepdim=True)
        self.latent_avg = w
        return w

    def _latent_from(self, styles: list[torch.Tensor], inject_index: int | None) -> torch.Tensor:
        """One or two w's (``[B, D]``) or one W+ (``[B, L, D]``) → per-layer latents ``[B, L, D]``."""
        L = self.n_latent
        if len(styles) == 1:
            s = styles[0]
            if s.ndim == 3:
                if s.shape[1] != L:
                    raise ValueError(
                        f"W+ latent has {s.shape[1]} layers; this {self.size}px generator needs {L}."
                    )
                return s
            return s.unsqueeze(1).expand(-1, L, -1)
        if len(styles) == 2:  # style mixing: first inject_index layers from style 0, the rest from style 1
            if inject_index is None:
                inject_index = int(torch.randint(1, L, ()).item())
            if not 0 <= inject_index <= L:
                raise ValueError(f"inject_index={inject_index} must be in [0, {L}].")
            a = styles[0].unsqueeze(1).expand(-1, inject_index, -1)
            b = styles[1].unsqueeze(1).expand(-1, L - inject_index, -1)
            return torch.cat([a, b], 1)
        raise ValueError(f"Give one or two style tensors (style mixing), got {len(styles)}.")

    def truncate(
        self, styles: list[torch.Tensor], truncation: float, truncation_latent: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """The truncation trick ``w ← w_avg + ψ·(w - w_avg)`` on each w ``[B, D]`` or W+ ``[B, L, D]``.

        ``truncation_latent`` ``[1, D]`` defaults to ``self.latent_avg``; ``ψ ≥ 1`` returns ``styles`` unchanged.
        """
        if truncation >= 1:
            return styles
        if truncation_latent is None:
            truncation_latent = self.latent_avg
        if truncation_latent is None:
            raise ValueError(
                "truncation < 1 needs truncation_latent=G.mean_latent(4096) (or a loaded latent_avg)."
            )
        tl = truncation_latent.to(styles[0].device)
        tl = tl.view(1, 1, -1) if any(s.ndim == 3 for s in styles) else tl.view(1, -1)
        return [tl + truncation * (s - tl) for s in styles]

    def latents(
        self,
        styles: torch.Tensor | list[torch.Tensor],
        inject_index: int | None = None,
        truncation: float = 1.0,
        truncation_latent: torch.Tensor | None = None,
        input_is_latent: bool = False,
        c: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Codes → the per-layer latents ``[B, L, D]`` the synthesis network consumes.

        mapping (z → w, unless ``input_is_latent``) → truncation (:meth:`truncate`) → one w per layer: a single
        w is repeated ``L`` times, a W+ ``[B, L, D]`` is used as it is, and two w's are **style-mixed**: layers
        ``< inject_index`` take the first, the rest the second (``inject_index=None`` draws it uniformly in
        ``[1, L)`` from torch's global generator).

        Args:
            styles: z ``[B, D]`` (or a list of one or two); with ``input_is_latent=True`` w ``[B, D]`` or
                W+ ``[B, L, D]`` (or a list of one or two w's).
        """
        if isinstance(styles, torch.Tensor):
            styles = [styles]
        if not input_is_latent:
            styles = [self.mapping(s, c) for s in styles]
        styles = self.truncate(styles, truncation, truncation_latent)
        return self._latent_from(styles, inject_index)

    def synthesis(
        self,
        latent: torch.Tensor,
        noise: list[torch.Tensor | None] | None = None,
        randomize_noise: bool = True,
        return_features: bool = False,
    ):
        """Per-layer latents ``[B, L, D]`` → image ``[B, 3, size, size]`` (roughly in ``[-1, 1]``, not clamped).

        Args:
            latent: ``[B, L, D]`` from :meth:`latents`.
            noise: ``num_layers`` maps ``[B or 1, 1, r, r]`` (``None`` entries are drawn fresh);
                ``randomize_noise=False`` uses the fixed ``noises`` buffers when ``noise`` is not given.
            return_features: also return the ``num_layers`` post-activation feature maps of the styled
                convs (``[B, C_r, r, r]`` for r = 4, 8, 8, 16, 16, ...).

        Returns:
            the image, or ``(image, features)`` with ``return_features``.
        """
        if noise is None:
            noise = self.noises.as_list() if not randomize_noise else [None] * self.num_layers
        if len(noise) != self.num_layers:
            raise ValueError(f"noise has {len(noise)} maps; this generator needs {self.num_layers}.")
        feats: list[torch.Tensor] = []
        out = self.input(latent.shape[0])  # [B, C4, 4, 4]
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        feats.append(out)
        skip = self.to_rgb1(out, latent[:, 1])  # [B, 3, 4, 4]
        i = 1
        for k, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * k](out, latent[:, i], noise=noise[2 * k + 1])  # [B, C, 2r, 2r]
            feats.append(out)
            out = self.convs[2 * k + 1](out, latent[:, i + 1], noise=noise[2 * k + 2])
            feats.append(out)
            skip = to_rgb(out, latent[:, i + 2], skip)  # [B, 3, 2r, 2r]
            i += 2
        return (skip, feats) if return_features else skip

    def forward(
        self,
        styles: torch.Tensor | list[torch.Tensor],
        return_latents: bool = False,
        inject_index: int | None = None,
        truncation: float = 1.0,
        truncation_latent: torch.Tensor | None = None,
        input_is_latent: bool = False,
        noise: list[torch.Tensor | None] | None = None,
        randomize_noise: bool = True,
        return_features: bool = False,
        c: torch.Tensor | None = None,
    ):
        """Generate images: :meth:`latents` (mapping → truncation → style mixing) then :meth:`synthesis`.

        Args:
            styles: z ``[B, D]`` (or a list of one or two, two = style mixing); with ``input_is_latent=True``
                w ``[B, D]`` or W+ ``[B, L, D]``.
            return_latents: also return the per-layer latents ``[B, L, D]`` (else ``None`` in their place).
            inject_index: style-mixing crossover layer (two styles only; ``None`` = random).
            truncation, truncation_latent: ``w ← w_avg + ψ·(w - w_avg)`` when ``ψ < 1`` (``w_avg`` ``[1, D]``
                defaults to ``self.latent_avg``).
            noise: per-layer noise maps (``None`` entries are drawn fresh); ``randomize_noise=False`` uses the
                fixed ``noises`` buffers.
            return_features: also return the ``num_layers`` post-activation feature maps of the styled convs
                (``[B, C_r, r, r]`` for r = 4, 8, 8, 16, 16, ...) — used by CDC and MixDL.
            c: class indices ``[B]`` of a conditional generator (used when mapping z).

        Returns:
            ``(image [B, 3, size, size], latent [B, L, D] or None)`` and, with ``return_features``, a third
            element: the feature list. Images are roughly in ``[-1, 1]`` and not clamped. Same calling
            convention (and module names) as rosinality's ``Generator``.
        """
        latent = self.latents(styles, inject_index, truncation, truncation_latent, input_is_latent, c)
        image, feats = self.synthesis(latent, noise, randomize_noise, return_features=True)
        result = (image, latent if return_latents else None)
        return (*result, feats) if return_features else result


# Sane limits for a config read from a file, checked before anything is allocated: the official 1024-px
# config-f generator has size 1024, style_dim 512, n_mlp 8, channel_max 512 and ~30 M parameters.
CONFIG_LIMITS = dict(
    size=(8, 1024),
    style_dim=(1, 1024),
    n_mlp=(1, 16),
    channel_multiplier=(1, 16),
    channel_base=(1, 1 << 20),
    channel_max=(1, 1024),
    stddev_group=(1, 64),
    c_dim=(0, 100_000),
    cmap_dim=(1, 4096),
)
MAX_CONFIG_PARAMETERS = 200_000_000  # ≈ 0.8 GB of float32: far above any model this project loads


def _estimated_parameters(cfg: dict[str, Any], generator: bool) -> int:
    """Rough weight count of the architecture ``cfg`` describes (3×3 convs dominate), without building it."""
    ch = channel_table(
        cfg["size"], cfg.get("channel_multiplier", 2), cfg.get("channel_base"), cfg.get("channel_max", 512)
    )
    res = sorted(ch)
    convs = sum(9 * ch[a] * ch[b] * 2 for a, b in zip(res, res[1:])) + 9 * ch[4] * ch[4]
    if not generator:
        return convs + 16 * ch[4] * ch[4]
    dim = cfg.get("style_dim", 512)
    return convs + cfg.get("n_mlp", 8) * dim * dim + 3 * dim * sum(ch.values())


def validate_config(cls: type, config: Any, where: str = "config") -> dict[str, Any]:
    """Check a saved constructor ``config`` for :class:`Generator` / :class:`Discriminator` before building it.

    Unknown keys (named, with the accepted ones), wrong types, values outside :data:`CONFIG_LIMITS` and
    architectures above :data:`MAX_CONFIG_PARAMETERS` raise ``ValueError`` mentioning ``where`` (e.g. the
    file); nothing is allocated. Returns a copy of ``config``.
    """
    import inspect

    if not isinstance(config, dict):
        raise ValueError(
            f"{where}: expected a dict of {cls.__name__} arguments, got {type(config).__name__}."
        )
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(str(k) for k in config if k not in accepted)
    if unknown:
        raise ValueError(f"{where}: unknown {cls.__name__} argument(s) {unknown}; accepted: {accepted}.")
    if "size" not in config:
        raise ValueError(f"{where}: no 'size' in the {cls.__name__} config.")
    for key, (low, high) in CONFIG_LIMITS.items():
        value = config.get(key)
        if key not in config or (value is None and key == "channel_base"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{where}: {key}={value!r} is not an integer in [{low}, {high}].")
    try:
        check_size(config["size"])
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    if "lr_mlp" in config and not (isinstance(config["lr_mlp"], (int, float)) and 0 < config["lr_mlp"] <= 1):
        raise ValueError(f"{where}: lr_mlp={config['lr_mlp']!r} is not a number in (0, 1].")
    if "fused" in config and config["fused"] not in (None, True, False):
        raise ValueError(f"{where}: fused={config['fused']!r}; expected true, false or null.")
    kernel = config.get("blur_kernel", [1, 3, 3, 1])
    if not (
        isinstance(kernel, (list, tuple))
        and 1 <= len(kernel) <= 8
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in kernel)
        and sum(kernel) != 0
    ):
        raise ValueError(f"{where}: blur_kernel={kernel!r} is not a short list of finite numbers.")
    n = _estimated_parameters(config, generator=cls is Generator)
    if n > MAX_CONFIG_PARAMETERS:
        raise ValueError(
            f"{where}: this architecture would have about {n / 1e6:.0f} M parameters (more than "
            f"{MAX_CONFIG_PARAMETERS / 1e6:.0f} M); refusing to allocate it."
        )
    return dict(config)


def validate_generator_config(config: Any, where: str = "config") -> dict[str, Any]:
    """:func:`validate_config` for :class:`Generator` (what ``load_generator`` checks before building)."""
    return validate_config(Generator, config, where)


# ---------------------------------------------------------------------------------------------------------
# 5. Discriminator
# ---------------------------------------------------------------------------------------------------------


class ConvLayer(nn.Sequential):
    """[Blur →] EqualConv2d [→ bias + leaky-ReLU [→ clamp]]; ``downsample=True`` blurs then convolves with
    stride 2.

    A ``nn.Sequential`` so that keys read ``0.weight`` / ``1.bias`` (or ``0.kernel`` / ``1.weight`` /
    ``2.bias`` when down-sampling), exactly as in rosinality. ``conv_clamp`` (activated layers only, set by
    :meth:`Discriminator.set_conv_clamp`) clamps the output as NVlabs' discriminator layers do.
    """

    conv_clamp: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out if self.conv_clamp is None else out.clamp(-self.conv_clamp, self.conv_clamp)

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        downsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        bias: bool = True,
        activate: bool = True,
    ):
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(
            EqualConv2d(
                in_channel,
                out_channel,
                kernel_size,
                stride=stride,
                padding=padding,
                bias=bias and not activate,
            )
        )
        if activate:
            layers.append(FusedLeakyReLU(out_channel))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Residual D block: two 3×3 convs (the second down-samples) + a 1×1 down-sampling skip, sum / √2.

    Shapes: ``[B, I, H, W]`` → ``[B, O, H/2, W/2]``.
    """

    def __init__(self, in_channel: int, out_channel: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, activate=False, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


def stddev_group_size(batch: int, group: int = 4) -> int:
    """Group size for the minibatch-stddev feature that works for **any** batch size.

    rosinality/NVlabs use ``min(batch, 4)`` and crash when ``batch > 4`` is not divisible by 4. Here: the
    largest divisor of ``batch`` in ``[2, group]``; if none exists (a prime batch > ``group``) the whole batch
    is one group. Identical to the official choice whenever that one works.
    """
    if batch <= group:
        return batch
    for g in range(group, 1, -1):
        if batch % g == 0:
            return g
    return batch


def minibatch_stddev(x: torch.Tensor, group: int = 4, n_feat: int = 1) -> torch.Tensor:
    """Append the batch's standard deviation as extra channel(s): ``[B, C, H, W]`` → ``[B, C + n_feat, H, W]``.

    The batch is split into groups; within each group the per-feature std is averaged over C, H, W. A
    collapsed generator produces near-identical samples (low std), which the discriminator can now see.
    """
    b, c, h, w = x.shape
    g = stddev_group_size(b, group)
    y = x.view(g, b // g, n_feat, c // n_feat, h, w)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)  # [B/g, F, C/F, H, W]
    y = y.mean([2, 3, 4]).view(b // g, n_feat, 1, 1)  # [B/g, F, 1, 1]
    y = y.repeat(g, 1, h, w)  # [B, F, H, W]; sample j belongs to group j mod (B/g)
    return torch.cat([x, y], 1)


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: FromRGB → ResBlocks (size → 4) → mbstd → conv → 2 linear layers.

    ``D(x)`` returns logits ``[B, 1]``. ``D(x, return_features=True)`` returns ``(logits, features)`` where
    ``features`` lists the FromRGB output ``[B, C_size, size, size]``, each ResBlock output
    ``[B, C_r, r, r]`` for r = size/2 .. 4, the ``final_conv`` output ``[B, C4, 4, 4]`` and, last, the
    penultimate vector ``[B, C4]`` (input of the final linear layer; MixDL's projection head uses it).

    ``c_dim > 0`` makes it **class-conditional by projection** (StyleGAN2-ADA's): the last linear layer yields
    ``h(x)`` ``[B, cmap_dim]``, a small mapping network turns the class into ``m(c)`` of the same size, and
    ``D(x, c) = h(x)·m(c) / √cmap_dim``.
    """

    def __init__(
        self,
        size: int,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        channel_base: int | None = None,
        channel_max: int = 512,
        stddev_group: int = 4,
        c_dim: int = 0,
        cmap_dim: int | None = None,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.size = check_size(size)
        self._config = dict(
            size=size,
            channel_multiplier=channel_multiplier,
            blur_kernel=list(blur_kernel),
            channel_base=channel_base,
            channel_max=channel_max,
            stddev_group=stddev_group,
        )
        ch = self.channels = channel_table(size, channel_multiplier, channel_base, channel_max)
        log_size = int(math.log2(size))
        self.convs = nn.ModuleList([ConvLayer(3, ch[size], 1)])
        in_ch = ch[size]
        for r in range(log_size, 2, -1):
            self.convs.append(ResBlock(in_ch, ch[2 ** (r - 1)], blur_kernel))
            in_ch = ch[2 ** (r - 1)]
        self.stddev_group, self.stddev_feat = stddev_group, 1
        self.final_conv = ConvLayer(in_ch + 1, ch[4], 3)
        self.cmap_dim = (cmap_dim or ch[4]) if c_dim else 0
        self.final_linear = nn.Sequential(
            EqualLinear(ch[4] * 4 * 4, ch[4], activation="fused_lrelu"),
            EqualLinear(ch[4], self.cmap_dim or 1),
        )
        if c_dim:
            self._config.update(c_dim=c_dim, cmap_dim=self.cmap_dim)
            self.class_embed = ClassEmbedding(c_dim, self.cmap_dim)
            self.cmap = nn.Sequential(
                *[EqualLinear(self.cmap_dim, self.cmap_dim, activation="fused_lrelu") for _ in range(2)]
            )
        else:
            self.class_embed, self.cmap = None, None
        self.set_conv_clamp(conv_clamp)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments; ``c_dim`` read from the class table (as :attr:`Generator.config`)."""
        return _with_table_c_dim(self._config, self)

    def set_conv_clamp(self, conv_clamp: float | None) -> "Discriminator":
        """Clamp every activated conv's output (FromRGB, both convs of each block, ``final_conv``) to
        ``[-conv_clamp, conv_clamp]``, NVlabs' ``conv_clamp``; ``None`` turns it off."""
        return _set_conv_clamp(
            self, conv_clamp, lambda m: isinstance(m, ConvLayer) and isinstance(m[-1], FusedLeakyReLU)
        )

    @property
    def c_dim(self) -> int:
        """Number of classes (0 for an unconditional discriminator), read from the class table."""
        return self.class_embed.n_classes if self.class_embed is not None else 0

    @torch.no_grad()
    def add_class(self, generator: torch.Generator | None = None) -> int:
        """Append one class (a new embedding column ~ N(0, 1)); returns its index (conditional D only)."""
        if self.class_embed is None:
            raise ValueError(
                "add_class needs a class-conditional discriminator (Discriminator(..., c_dim=n))"
            )
        return self.class_embed.add_class(generator)

    def projection_parameters(self) -> list[nn.Parameter]:
        """The class projection and the last two linear layers (LSO tunes these at 1/100 of D's rate)."""
        mods = [self.final_linear] + ([self.class_embed, self.cmap] if self.class_embed is not None else [])
        return [p for m in mods for p in m.parameters()]

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` → the flattened ``final_conv`` output ``[B, C4·16]`` (every block and the minibatch
        stddev, before the linear layers and the class projection): the features LSO distils."""
        return self._convolutions(x)[-1].flatten(1)

    def _convolutions(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The convolutional part: every block's output, then ``final_conv``'s ``[B, C4, 4, 4]`` (last)."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != self.size or x.shape[-2] != self.size:
            raise ValueError(
                f"Discriminator({self.size}) expects images [B, 3, {self.size}, {self.size}], "
                f"got {list(x.shape)}."
            )
        feats = []
        out = x
        for layer in self.convs:
            out = layer(out)
            feats.append(out)
        out = minibatch_stddev(out, self.stddev_group, self.stddev_feat)  # [B, C4 + 1, 4, 4]
        feats.append(self.final_conv(out))  # [B, C4, 4, 4]
        return feats

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, return_features: bool = False):
        """``x [B, 3, S, S]`` (and class indices ``c [B]`` when conditional) → logits ``[B, 1]``."""
        if self.class_embed is None and c is not None:
            raise ValueError("this discriminator is unconditional: it takes no class c")
        feats = self._convolutions(x)
        hidden = self.final_linear[0](feats[-1].flatten(1))  # [B, C4]
        feats.append(hidden)
        logits = self.final_linear[1](hidden)  # [B, 1], or h(x) [B, cmap_dim] when conditional
        if self.class_embed is not None:
            m = self.cmap(normalize_2nd_moment(self.class_embed(c)))  # [B, cmap_dim]
            logits = (logits * m).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)  # [B, 1]
        return (logits, feats) if return_features else logits


def validate_discriminator_config(config: Any, where: str = "config") -> dict[str, Any]:
    """:func:`validate_config` for :class:`Discriminator` (what ``load_discriminator`` checks before building)."""
    return validate_config(Discriminator, config, where)


def _set_conv_clamp(net: nn.Module, conv_clamp: float | None, clamped: Callable[[nn.Module], bool]) -> Any:
    """Give every layer ``clamped`` picks the bound (``None``: none); record it in ``net``'s config only when set,
    so unclamped models keep the config they always had."""
    net.conv_clamp = None if conv_clamp is None else float(conv_clamp)
    for m in net.modules():
        if clamped(m):
            m.conv_clamp = net.conv_clamp
    net._config.pop("conv_clamp", None)
    if net.conv_clamp is not None:
        net._config["conv_clamp"] = net.conv_clamp
    return net


def same_architecture(config_a: dict[str, Any], config_b: dict[str, Any]) -> bool:
    """Whether two generator configs build the same weights (``fused`` picks a code path and ``conv_clamp`` a
    bound on activations, neither changes the weights)."""

    def weights(config: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in config.items() if k not in ("fused", "conv_clamp")}

    return weights(config_a) == weights(config_b)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters: the trainable ones, or all of them (a shipped export is loaded frozen, so its
    trainable count is 0: the benchmark counts all)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------------------------------------
# 6. Convenience
# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def sample(
    G: Generator, n: int, seed: int = 0, truncation: float = 1.0, batch: int = 64, noise_mode: str = "random"
) -> torch.Tensor:
    """``n`` images ``[n, 3, size, size]`` (on CPU) from seeded z's; deterministic noise when ``noise_mode="const"``.

    z's are drawn on the CPU from ``seed`` so the same seed gives the same images on any device.
    """
    if noise_mode not in ("random", "const"):
        raise ValueError(f"noise_mode={noise_mode!r}; use 'random' or 'const'.")
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.style_dim, generator=gen)
    dev = next(G.parameters()).device
    outs = []
    for i in range(0, n, batch):
        zb = z[i : i + batch]
        if noise_mode == "random":  # per-sample noise, also drawn from the seeded CPU generator
            noise = [torch.randn(len(zb), 1, *m.shape[2:], generator=gen).to(dev) for m in G.noises.as_list()]
        else:
            noise = G.noises.as_list()
        img, _ = G(zb.to(dev), truncation=truncation, noise=noise)
        outs.append(img.cpu())
    return torch.cat(outs)


# The architecture of the shipped source model (``scripts/train_source_model.py`` trains it; the benchmark and
# notebook 02's full profile use it): a lab-size 32-px net, 1.08 M parameters in G.
SOURCE_MODEL_CONFIG = dict(size=32, style_dim=128, n_mlp=4, channel_base=2048, channel_max=128)


# ---------------------------------------------------------------------------------------------------------
# Names that moved (notebooks 01, 02 and 04 still read them from here)
# ---------------------------------------------------------------------------------------------------------

_MOVED = {
    **{
        name: "fewshot_lib.models.stylegan2_io"
        for name in (
            "PICKLE_HELP",
            "RosinalityCheckpoint",
            "discriminator_from_state",
            "export_discriminator",
            "export_generator",
            "generator_from_state",
            "infer_discriminator_channels",
            "infer_generator_config",
            "load_discriminator",
            "load_generator",
            "load_rosinality",
            "load_state_strict",
            "read_torch_file",
            "save_rosinality",
            "strip_module_prefix",
        )
    },
    **{
        name: "fewshot_lib.artifacts"
        for name in ("load_source_model", "source_model_available", "source_model_paths")
    },
    "accumulate": "fewshot_lib.models.helpers",
}


def __getattr__(name: str) -> Any:
    """``sg.load_rosinality`` & co. still work: file formats live in ``stylegan2_io``, shipped models in
    ``fewshot_lib.artifacts`` (imported on first use, so this module imports neither)."""
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
