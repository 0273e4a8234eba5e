"""LoFGAN (Gu et al., ICCV 2021): k-shot image generation by fusing *local* representations.

The task: given ``k`` images of a class the generator has never seen (say 3 photos of a new flower species),
produce new, different images of that class — without any fine-tuning. LoFGAN is trained episodically on
*seen* classes: each step shows it ``k`` images of one class and asks for one more.

The generator is a plain encoder → fusion → decoder:

1. **Encode** every shot into a small feature map ``[C, h, w]`` (8×8 at 128 px). Each of the ``h·w`` positions is
   a *local representation* — roughly "what the image looks like around here".
2. **Fuse** (the :class:`LocalFusionModule`, LFM). Pick one shot as the *base*. Select a fraction η of its
   positions at random; for each selected position find the most similar position (cosine similarity) in
   every other shot — its *reference* — and replace the base vector by a random convex combination of itself
   and its matches. Unselected positions keep the base. The layout comes from the base; local details come
   from all shots, wherever they happen to sit in them.
3. **Decode** the fused map into an image.

Its predecessor family (MatchingGAN, F2GAN) fuses *globally*: ``f = Σ_k α_k E(x_k)`` at every position, which
blends misaligned parts (an eye over a cheek) into a blur. :class:`GlobalFusion` implements that baseline on
the same encoder/decoder so the two differ only in the fusion step.

The discriminator is a residual network with two heads: real/fake (hinge loss) and a classifier over the seen
classes (ACGAN-style), so generated images must also look like *their* class.

Sizes follow the reference code at 128 px (encoder 32→64→128→128→128 channels, four stride-2 convs, an 8×8
fused map; D 64→1024 channels, four residual stages) and scale with the resolution: the number of
down-samplings is ``log2(size / feature_size)`` so the fused map stays 8×8 (or whatever ``feature_size`` you
choose) at 32 or 64 px as well, and ``nf`` / ``nf_d`` shrink the widths for CPU-sized experiments.

Differences from the reference code (documented, deliberate): the base shot is drawn per episode (the
reference draws one index for the whole batch); randomness comes from an optional ``torch.Generator`` so runs
are reproducible; the LFM's unused ``W`` convolution is omitted.

Taught in: ``notebooks/06_lofgan.ipynb``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "ConvBlock",
    "Encoder",
    "Decoder",
    "FusionRecord",
    "LocalFusionModule",
    "GlobalFusion",
    "LoFGANGenerator",
    "PenaltyConv2d",
    "input_gradients_only",
    "ActFirstResBlock",
    "LoFGANDiscriminator",
    "local_selection",
    "local_matching",
    "local_replacement",
    "random_alpha",
    "base_first_order",
    "n_downsamplings",
    "load_lofgan_export",
]


def n_downsamplings(size: int, feature_size: int) -> int:
    """How many stride-2 stages take ``size`` px down to a ``feature_size`` map (e.g. 128 → 8: 4)."""
    if size < 1 or feature_size < 1 or size % feature_size:
        raise ValueError(f"image size {size} must be a positive multiple of feature_size {feature_size}")
    n = int(round(math.log2(size // feature_size)))
    if feature_size * 2**n != size:
        raise ValueError(f"image size {size} must be feature_size {feature_size} times a power of two")
    return n


# ----------------------------------------------------------------------------------------------------------
# Encoder / decoder
# ----------------------------------------------------------------------------------------------------------


class ConvBlock(nn.Sequential):
    """Reflect-pad → conv → BatchNorm → LeakyReLU(0.2): the generator's only building block.

    ``[B, c_in, H, W] → [B, c_out, H/stride, W/stride]``.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1):
        super().__init__(
            nn.ReflectionPad2d(kernel // 2),
            nn.Conv2d(c_in, c_out, kernel, stride),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.2),
        )


def encoder_channels(n_downs: int, nf: int) -> list[int]:
    """Widths after the stem and each down-sampling: ``[nf, 2nf, 4nf, 4nf, …]`` (32, 64, 128, 128, 128 at nf=32)."""
    return [nf] + [nf * min(2 ** (i + 1), 4) for i in range(n_downs)]


class Encoder(nn.Module):
    """Images → local representations. ``[N, 3, S, S] → [N, C, S/2^d, S/2^d]`` with ``d`` stride-2 convs.

    A 5×5 stem keeps the resolution; each further 3×3 stride-2 block halves it.
    """

    def __init__(self, n_downs: int, nf: int = 32):
        super().__init__()
        ch = encoder_channels(n_downs, nf)
        blocks = [ConvBlock(3, ch[0], kernel=5)]
        blocks += [ConvBlock(ch[i], ch[i + 1], stride=2) for i in range(n_downs)]
        self.net = nn.Sequential(*blocks)
        self.out_channels = ch[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, 3, S, S] -> [N, C, h, w]
        return self.net(x)


class Decoder(nn.Module):
    """Fused feature map → image, the encoder mirrored: ``[B, C, h, w] → [B, 3, h·2^d, w·2^d]`` in ``[-1, 1]``.

    Each stage is nearest ×2 up-sampling then a 3×3 :class:`ConvBlock`; a 5×5 conv + tanh makes the RGB image.
    No skips, no noise: all randomness lives in the fusion step.
    """

    def __init__(self, n_downs: int, nf: int = 32):
        super().__init__()
        ch = encoder_channels(n_downs, nf)[::-1]  # e.g. 128, 128, 128, 64, 32
        blocks: list[nn.Module] = []
        for i in range(n_downs):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), ConvBlock(ch[i], ch[i + 1])]
        blocks += [nn.ReflectionPad2d(2), nn.Conv2d(ch[-1], 3, 5), nn.Tanh()]
        self.net = nn.Sequential(*blocks)

    def forward(self, f: torch.Tensor) -> torch.Tensor:  # [B, C, h, w] -> [B, 3, S, S]
        return self.net(f)


# ----------------------------------------------------------------------------------------------------------
# Fusion: shared randomness helpers
# ----------------------------------------------------------------------------------------------------------


def random_alpha(batch: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fusion coefficients ``[batch, k]``: U(0, 1) draws normalised to sum to 1 per episode (as the reference;
    this is *not* a Dirichlet(1) draw — mass concentrates less near the corners)."""
    a = torch.rand(batch, k, generator=generator) + 1e-6
    return a / a.sum(dim=1, keepdim=True)


def base_first_order(base_index: torch.Tensor, k: int) -> torch.Tensor:
    """Per-episode shot order ``[B, k]`` with the base first and the others in their original order.

    ``base_index [B]``; e.g. base 1 of 3 → ``[1, 0, 2]``. Gathering shots/features/α with it puts the base at
    position 0, so everything downstream can say ``x[:, 0]`` for the base and ``x[:, 1:]`` for the references.
    """
    is_base = (torch.arange(k, device=base_index.device)[None, :] == base_index[:, None]).float()
    return torch.argsort(is_base, dim=1, descending=True, stable=True)


def gather_shots(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Reorder the shot axis of ``x [B, k, ...]`` per episode with ``order [B, k]``."""
    idx = order.to(x.device).view(*order.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, idx)


# ----------------------------------------------------------------------------------------------------------
# Local Fusion Module, step by step
# ----------------------------------------------------------------------------------------------------------


def local_selection(
    batch: int, n_positions: int, rate: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Step 1 — pick ``M = int(rate · n_positions)`` distinct positions of the base map, fresh per episode.

    Returns flat indices ``[batch, M]`` into ``h·w`` (``M`` may be 0: then nothing is fused).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"selection rate eta must be in [0, 1], got {rate}")
    m = int(rate * n_positions)
    scores = torch.rand(batch, n_positions, generator=generator)
    return scores.argsort(dim=1)[:, :m]  # a uniformly random M-subset per row


def cosine_similarity_maps(base: torch.Tensor, refs: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between each selected base vector and every position of every reference.

    ``base [B, C, N]``, ``refs [B, n, C, N]``, ``positions [B, M]`` → ``[B, n, M, N]`` (N = h·w).
    """
    base_n = F.normalize(base, dim=1)
    refs_n = F.normalize(refs, dim=2)
    idx = positions[:, None, :].expand(-1, base.shape[1], -1)  # [B, C, M]
    chosen = torch.gather(base_n, 2, idx)  # [B, C, M]
    return torch.einsum("bcm,bncp->bnmp", chosen, refs_n)  # [B, n, M, N]


def local_matching(
    base: torch.Tensor, refs: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2 — for each selected base position, the top-1 most similar position in every reference.

    ``base [B, C, N]``, ``refs [B, n, C, N]``, ``positions [B, M]`` →
    ``(ref_positions [B, n, M], similarity [B, n, M, N])``. The argmax has no gradient; the features later
    gathered at those positions do.
    """
    sim = cosine_similarity_maps(base, refs, positions)
    return sim.argmax(dim=-1), sim


def local_replacement(
    base: torch.Tensor,
    refs: torch.Tensor,
    positions: torch.Tensor,
    ref_positions: torch.Tensor,
    alpha: torch.Tensor,
) -> torch.Tensor:
    """Step 3 — replace each selected base vector by ``α_0·base[p] + Σ_j α_j·ref_j[match_j(p)]``.

    ``base [B, C, N]``, ``refs [B, n, C, N]``, ``positions [B, M]``, ``ref_positions [B, n, M]``,
    ``alpha [B, 1+n]`` (base coefficient first, summing to 1) → fused ``[B, C, N]``. Raw (unnormalised) vectors
    are mixed; unselected positions keep the base unchanged. Works for any ``C`` — the loss reuses it on pixels.
    """
    b, c, _ = base.shape
    n, m = refs.shape[1], positions.shape[1]
    if m == 0:
        return base
    alpha = alpha.to(base.dtype)
    idx = positions[:, None, :].expand(-1, c, -1)  # [B, C, M]
    mix = alpha[:, 0, None, None] * torch.gather(base, 2, idx)  # [B, C, M]
    if n:
        ridx = ref_positions[:, :, None, :].expand(-1, -1, c, -1)  # [B, n, C, M]
        matched = torch.gather(refs, 3, ridx)  # [B, n, C, M]
        mix = mix + (alpha[:, 1:, None, None] * matched).sum(dim=1)
    return base.scatter(2, idx, mix)


@dataclass
class FusionRecord:
    """What one fusion did, needed to replay it at image level (the local reconstruction loss).

    ``order [B, k]`` shot order with the base first; ``alpha [B, k]`` coefficients in that order;
    ``positions [B, M]`` selected base positions; ``ref_positions [B, k-1, M]`` their matches;
    ``similarity [B, k-1, M, h·w]`` (optional) the cosine maps; ``feature_size`` = h (= w).
    Global fusion leaves the position fields ``None``.
    """

    order: torch.Tensor
    alpha: torch.Tensor
    feature_size: int
    positions: torch.Tensor | None = None
    ref_positions: torch.Tensor | None = None
    similarity: torch.Tensor | None = None

    @property
    def base_index(self) -> torch.Tensor:  # [B]
        return self.order[:, 0]


class LocalFusionModule(nn.Module):
    """LFM: local selection (rate η) → local matching (cosine, top-1) → local replacement (random α).

    No parameters: it only routes features. ``forward(features [B, k, C, h, w], ...)`` →
    ``(fused [B, C, h, w], FusionRecord)``.
    """

    def __init__(self, rate: float = 0.5):
        super().__init__()
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"selection rate must be in [0, 1], got {rate}")
        self.rate = rate

    def forward(
        self,
        features: torch.Tensor,
        rate: float | None = None,
        alpha: torch.Tensor | None = None,
        base_index: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        keep_similarity: bool = False,
    ) -> tuple[torch.Tensor, FusionRecord]:
        b, k, c, h, w = features.shape
        rate = self.rate if rate is None else rate
        dev = features.device
        if base_index is None:
            base_index = torch.randint(k, (b,), generator=generator)
        if alpha is None:
            alpha = random_alpha(b, k, generator)  # [B, k] in the original shot order
        order = base_first_order(base_index.cpu(), k)  # [B, k]
        alpha = gather_shots(alpha.cpu(), order).to(dev)  # [B, k], base coefficient first
        feats = gather_shots(features, order.to(dev)).flatten(3)  # [B, k, C, N]
        base, refs = feats[:, 0], feats[:, 1:]  # [B, C, N], [B, k-1, C, N]
        positions = local_selection(b, h * w, rate, generator).to(dev)  # [B, M]
        ref_positions, sim = local_matching(base, refs, positions)  # [B, k-1, M], [B, k-1, M, N]
        fused = local_replacement(base, refs, positions, ref_positions, alpha)  # [B, C, N]
        record = FusionRecord(
            order.to(dev), alpha, h, positions, ref_positions, sim.detach() if keep_similarity else None
        )
        return fused.view(b, c, h, w), record


class GlobalFusion(nn.Module):
    """The MatchingGAN/F2GAN-style baseline: ``f = Σ_k α_k E(x_k)`` at *every* position.

    ``forward(features [B, k, C, h, w], ...)`` → ``(fused [B, C, h, w], FusionRecord)`` (no positions).
    """

    def forward(
        self,
        features: torch.Tensor,
        rate: float | None = None,
        alpha: torch.Tensor | None = None,
        base_index: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        keep_similarity: bool = False,
    ) -> tuple[torch.Tensor, FusionRecord]:
        b, k, c, h, w = features.shape
        if alpha is None:
            alpha = random_alpha(b, k, generator)
        order = torch.arange(k).expand(b, k)
        alpha = alpha.to(features.device, features.dtype)
        fused = (alpha[:, :, None, None, None] * features).sum(dim=1)  # [B, C, h, w]
        return fused, FusionRecord(order.to(features.device), alpha, h)


# ----------------------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------------------


class LoFGANGenerator(nn.Module):
    """k-shot generator: encode every shot, fuse (locally or globally), decode.

    Args:
        size: image resolution (a power-of-two multiple of ``feature_size``).
        feature_size: side of the fused map (8 as in the reference at 128 px).
        nf: encoder stem width (32 in the reference; widths double up to ``4·nf``).
        fusion: ``"local"`` (LoFGAN) or ``"global"`` (the baseline).
        rate: LFM selection rate η (0.5 in the reference); ignored by global fusion.

    ``forward(shots [B, k, 3, S, S])`` → ``(fake [B, 3, S, S], FusionRecord)``.
    """

    def __init__(
        self, size: int = 128, feature_size: int = 8, nf: int = 32, fusion: str = "local", rate: float = 0.5
    ):
        super().__init__()
        if fusion not in ("local", "global"):
            raise ValueError(f"fusion must be 'local' or 'global', got {fusion!r}")
        self.size, self.feature_size, self.fusion_kind = size, feature_size, fusion
        n_downs = n_downsamplings(size, feature_size)
        self.encoder = Encoder(n_downs, nf)
        self.decoder = Decoder(n_downs, nf)
        self.fusion = LocalFusionModule(rate) if fusion == "local" else GlobalFusion()

    def encode(self, shots: torch.Tensor) -> torch.Tensor:  # [B, k, 3, S, S] -> [B, k, C, h, w]
        b, k = shots.shape[:2]
        f = self.encoder(shots.flatten(0, 1))
        return f.view(b, k, *f.shape[1:])

    def forward(
        self,
        shots: torch.Tensor,
        rate: float | None = None,
        alpha: torch.Tensor | None = None,
        base_index: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        keep_similarity: bool = False,
    ) -> tuple[torch.Tensor, FusionRecord]:
        if shots.dim() != 5 or shots.shape[2] != 3 or shots.shape[-1] != self.size:
            raise ValueError(f"shots must be [B, k, 3, {self.size}, {self.size}], got {tuple(shots.shape)}")
        feats = self.encode(shots)  # [B, k, C, h, w]
        fused, record = self.fusion(
            feats,
            rate=rate,
            alpha=alpha,
            base_index=base_index,
            generator=generator,
            keep_similarity=keep_similarity,
        )
        return self.decoder(fused), record  # [B, 3, S, S]


# ----------------------------------------------------------------------------------------------------------
# Discriminator
# ----------------------------------------------------------------------------------------------------------


class input_gradients_only:
    """Context manager: inside it, :class:`PenaltyConv2d` layers skip their weight gradients during backward.

    ``torch.autograd.grad(s, x, create_graph=True)`` (a gradient penalty) needs only input gradients. Stock
    autograd ops know which outputs a call asks for; a custom ``autograd.Function`` does not, so the penalty says
    it explicitly (see :func:`fewshot_lib.methods.lofgan.class_logit_gradient_penalty`).
    """

    active = False

    def __enter__(self) -> "input_gradients_only":
        self._previous, input_gradients_only.active = input_gradients_only.active, True
        return self

    def __exit__(self, *exc) -> None:
        input_gradients_only.active = self._previous


def _conv_backward(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: bool, mask: list[bool]
) -> tuple[torch.Tensor | None, ...]:
    """PyTorch's fused first-order convolution backward (stride 1, no padding): ``(∂x, ∂weight, ∂bias)`` where
    ``mask`` says which to compute. ``x`` is read for its shape only when just ``∂x`` is asked for."""
    return torch.ops.aten.convolution_backward(
        grad, x, weight, [weight.shape[0]] if bias else None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask
    )


class _ConvInputGradient(torch.autograd.Function):
    """The input gradient of a stride-1 unpadded conv, ``∂x = conv_transpose2d(grad, weight)``, as an op of its own
    whose backward runs the two ordinary convolution kernels: a forward conv for ``∂grad`` and a plain weight
    gradient for ``∂weight``."""

    @staticmethod
    def forward(ctx, grad: torch.Tensor, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grad, weight)
        return _conv_backward(grad, x, weight, False, [True, False, False])[0]  # x: shape only

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_grad_x: torch.Tensor):
        grad, weight = ctx.saved_tensors
        d_grad = F.conv2d(grad_grad_x, weight) if ctx.needs_input_grad[0] else None
        d_weight = None
        if ctx.needs_input_grad[
            1
        ]:  # Σ grad[n,o,h,w] · grad_grad_x[n,i,h+u,w+v]: a plain conv weight gradient
            d_weight = _conv_backward(grad, grad_grad_x, weight, False, [False, True, False])[1]
        return d_grad, d_weight, None


class _ConvWithFastDoubleBackward(torch.autograd.Function):
    """``conv2d(x, weight, bias)`` (stride 1, no padding) whose input gradient is itself an ordinary, fast op.

    Why: the gradient penalty differentiates D's *input gradient* once more (double backprop). PyTorch's generic
    second derivative of a convolution computes its weight term as a convolution whose kernel is as large as the
    feature map — correct, but several times slower on CPU than a normal weight gradient. Making the input
    gradient an op of its own (:class:`_ConvInputGradient`) lets the second pass use the ordinary kernels.
    The numbers are the same (``tests/test_lofgan.py`` compares both paths); only the speed differs.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        device = x.device.type
        if torch.is_autocast_enabled(device):  # a custom op is not autocast's: cast as it would for a conv
            dtype = torch.get_autocast_dtype(device)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        with torch.autocast(device, enabled=False):
            return F.conv2d(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.to(x.dtype)  # (autograd casts the returned gradients back to the parameters' dtype)
        weights_wanted = not input_gradients_only.active
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1] and weights_wanted
        need_b = ctx.has_bias and ctx.needs_input_grad[2] and weights_wanted
        # With create_graph=True (the penalty) the input gradient must stay differentiable: its own op.
        # Otherwise one fused call gives every gradient the cheapest way.
        x_differentiable = need_x and torch.is_grad_enabled()
        gx, gw, gb = _conv_backward(
            grad, x, weight, ctx.has_bias, [need_x and not x_differentiable, need_w, need_b]
        )
        if x_differentiable:
            gx = _ConvInputGradient.apply(grad, weight, x.detach())
        return gx, gw, gb


class PenaltyConv2d(nn.Conv2d):
    """A stride-1, unpadded ``nn.Conv2d`` (same parameters and state-dict keys) whose double backward is fast;
    see :class:`_ConvWithFastDoubleBackward`. ``[N, c_in, H, W] → [N, c_out, H - k + 1, W - k + 1]``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True):
        super().__init__(c_in, c_out, kernel, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ConvWithFastDoubleBackward.apply(x, self.weight, self.bias)


def sn_conv(c_in: int, c_out: int, kernel: int) -> nn.Module:
    """Reflect-padded, spectrally normalised conv (keeps the spatial size)."""
    return nn.Sequential(nn.ReflectionPad2d(kernel // 2), spectral_norm(PenaltyConv2d(c_in, c_out, kernel)))


class ActFirstResBlock(nn.Module):
    """Pre-activation residual block: ``x + [LReLU → SN-conv3 → LReLU → SN-conv3](x)``; learned 1×1 shortcut when
    the width changes. ``[N, c_in, H, W] → [N, c_out, H, W]``. Hidden width ``max(c_in, c_out)`` as in the reference.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        hidden = max(c_in, c_out)
        self.residual = nn.Sequential(
            nn.LeakyReLU(0.2), sn_conv(c_in, hidden, 3), nn.LeakyReLU(0.2), sn_conv(hidden, c_out, 3)
        )
        self.shortcut = PenaltyConv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, c_in, H, W] -> [N, c_out, H, W]
        return self.shortcut(x) + self.residual(x)


class LoFGANDiscriminator(nn.Module):
    """Residual D with a real/fake head and a class head over the seen classes.

    Stem 5×5 SN conv, then ``log2(size / feature_size)`` stages of [residual block (width ×2, capped at
    ``max_nf``) → 3×3 average pool stride 2], a final residual block, global average pooling, and two linear
    heads. At 128 px with ``nf_d=64``: 64→128→256→512→1024 channels, 8×8 before pooling (the reference).

    ``forward(x [N, 3, S, S] or [B, k, 3, S, S])`` → ``(adv [N], class_logits [N, num_classes])`` (5-D inputs are
    flattened to ``N = B·k``). One small deviation: a LeakyReLU before the pooling (the reference pools the raw
    residual output), so the heads see rectified features as in BigGAN/StyleGAN-style discriminators.
    """

    def __init__(
        self, num_classes: int, size: int = 128, feature_size: int = 8, nf_d: int = 64, max_nf: int = 1024
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
        n_downs = n_downsamplings(size, feature_size)
        layers: list[nn.Module] = [sn_conv(3, nf_d, 5)]
        c = nf_d
        for _ in range(n_downs):
            c_next = min(2 * c, max_nf)
            layers += [ActFirstResBlock(c, c_next), nn.ReflectionPad2d(1), nn.AvgPool2d(3, stride=2)]
            c = c_next
        layers.append(ActFirstResBlock(c, c))
        self.body = nn.Sequential(*layers)
        self.adv = nn.Linear(c, 1)
        self.cls = nn.Linear(c, num_classes)
        self.size, self.num_classes = size, num_classes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() == 5:
            x = x.flatten(0, 1)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"D expects [N, 3, S, S] or [B, k, 3, S, S] images, got {tuple(x.shape)}")
        h = self.body(x)  # [N, C, h, w]
        h = F.leaky_relu(h, 0.2).mean(dim=(2, 3))  # [N, C]
        return self.adv(h).squeeze(1), self.cls(h)  # [N], [N, num_classes]


def init_kaiming(module: nn.Module) -> None:
    """The reference init: Kaiming-normal (fan-in) weights and zero biases on plain convs/linears.

    Spectral-norm convs keep PyTorch's default init, as in the reference (its init misses them too).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not hasattr(m, "parametrizations"):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def load_lofgan_export(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a file written by ``scripts/train_lofgan.py``: ``{"g" or "d", "cfg", "classes", "steps"}`` with
    fp16 weights → the :class:`LoFGANGenerator` (or, for a ``_d.pt``, :class:`LoFGANDiscriminator`) in eval
    mode, float32. ``cfg`` is the training ``LoFGANConfig`` as a dict; the architecture is rebuilt from it.

    Shipped exports are looked up and checked by name with ``fewshot_lib.artifacts.load``.
    """
    from ..checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    which = "g" if "g" in ck else "d" if "d" in ck else None
    if which is None or "cfg" not in ck:
        raise ValueError(f"{Path(path).name} is not a LoFGAN export (needs 'g' or 'd', and 'cfg')")
    cfg = ck["cfg"]
    if which == "g":
        net: nn.Module = LoFGANGenerator(
            cfg["size"], cfg["feature_size"], cfg["nf"], cfg["fusion"], cfg["rate"]
        )
    else:
        net = LoFGANDiscriminator(
            len(ck["classes"]), cfg["size"], cfg["feature_size"], cfg["nf_d"], cfg["max_nf_d"]
        )
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck[which].items()})
    return net.to(device).eval()
