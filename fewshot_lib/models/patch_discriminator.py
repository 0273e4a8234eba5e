"""A patch-level discriminator: extra heads on an intermediate feature map of a StyleGAN2 discriminator.

CDC (``fewshot_lib.methods.cdc``) asks for *patch* realism away from its anchor latents, and MixDL
(``fewshot_lib.methods.mixdl``) uses the same wrapper; it is a model, so it lives here below both methods.
Taught in: ``notebooks/04_cdc.ipynb``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["PatchDiscriminator", "default_patch_resolution"]


def default_patch_resolution(size: int) -> int:
    """The patch map's side length: ``max(size // 8, 16)``, capped at ``size // 2``.

    At 256 px this is 32 — the reference's map, where one patch logit sees about 7 % of the image. At 32 px
    it is 16: each logit sees a 12×12 region (14 % of the image). The next coarser map (8×8) would see 82 %,
    i.e. almost the whole emoji, and "patch-level realism" would be image-level realism again.
    """
    return max(1, min(max(size // 8, 16), size // 2))


class PatchDiscriminator(nn.Module):
    """A StyleGAN2 discriminator with extra *patch heads* on an intermediate feature map.

    ``forward(x, mode="image")`` is the ordinary discriminator: one logit per image ``[B, 1]``.
    ``forward(x, mode="patch", head=k)`` runs the discriminator only up to the block whose output has
    ``patch_resolution`` pixels per side (features ``[B, C, h, w]``), then applies head ``k`` — a 3×3
    convolution to one channel — giving one logit per patch ``[B, 1, h, w]``. Each logit sees only its
    receptive field, so the patch D asks "does this region look like the target?", not "is this image one
    of the ten?". The epilogue (minibatch-stddev, final linear layers) is skipped, so any batch size works.

    The wrapped ``discriminator`` is *shared*, not copied: its parameters are part of this module (train
    them together with the heads), and ``discriminator`` itself still works on its own. It must expose the
    rosinality layout: ``discriminator.convs``, an ordered container of FromRGB followed by one
    downsampling block per resolution, applied in sequence.

    Args:
        discriminator: a StyleGAN2 ``Discriminator`` (``fewshot_lib.models.stylegan2``).
        size: the input resolution; defaults to ``discriminator.size``.
        patch_resolution: the side of the tapped feature map (a power of two between 4 and ``size``);
            default :func:`default_patch_resolution`.
        n_heads: number of independent heads (CDC uses 1 by default; MixDL samples one of 4 per step).
    """

    def __init__(
        self,
        discriminator: nn.Module,
        size: int | None = None,
        patch_resolution: int | None = None,
        n_heads: int = 1,
    ) -> None:
        super().__init__()
        if not hasattr(discriminator, "convs"):
            raise ValueError(
                "discriminator must expose `.convs` (FromRGB + downsampling blocks, rosinality "
                f"layout); got {type(discriminator).__name__}"
            )
        size = int(size or getattr(discriminator, "size", 0))
        if size <= 0:
            raise ValueError("pass size= (the input resolution): the discriminator has no `.size` attribute")
        if n_heads < 1:
            raise ValueError(f"n_heads must be ≥ 1, got {n_heads}")
        self.discriminator = discriminator
        self.size = size
        self.patch_resolution = int(patch_resolution or default_patch_resolution(size))
        self.block_index, channels = self._find_block(self.patch_resolution)
        self.heads = nn.ModuleList(nn.Conv2d(channels, 1, 3, padding=1) for _ in range(n_heads))
        for head in self.heads:  # start near 0 so the new heads do not disturb the pretrained D at step 0
            nn.init.normal_(head.weight, std=0.01 / (channels * 9) ** 0.5)
            nn.init.zeros_(head.bias)

    @torch.no_grad()
    def _find_block(self, resolution: int) -> tuple[int, int]:
        """Index of the first block of ``convs`` whose output is ``resolution`` px, and its channel count."""
        p = next(self.discriminator.parameters())
        h = torch.zeros(1, 3, self.size, self.size, device=p.device, dtype=p.dtype)
        seen = []
        for index, block in enumerate(self.discriminator.convs):
            h = block(h)
            seen.append(h.shape[-1])
            if h.shape[-1] == resolution:
                return index, h.shape[1]
        raise ValueError(
            f"patch_resolution={resolution} is not produced by the discriminator at size "
            f"{self.size}; its blocks output {seen} px"
        )

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, 3, size, size]`` → the tapped discriminator feature map ``[B, C, h, w]``."""
        h = x
        for index, block in enumerate(self.discriminator.convs):
            h = block(h)
            if index == self.block_index:
                return h
        raise RuntimeError("unreachable: block_index is beyond discriminator.convs")

    def forward(self, x: torch.Tensor, mode: str = "image", head: int = 0) -> torch.Tensor:
        """``x [B, 3, size, size]`` → ``[B, 1]`` (``mode="image"``) or ``[B, 1, h, w]`` (``mode="patch"``)."""
        if x.dim() != 4 or x.shape[-1] != self.size or x.shape[-2] != self.size:
            raise ValueError(f"expected images [B, 3, {self.size}, {self.size}], got {tuple(x.shape)}")
        if mode == "image":
            return self.discriminator(x)
        if mode == "patch":
            if not 0 <= head < len(self.heads):
                raise ValueError(f"head must be in [0, {len(self.heads)}), got {head}")
            return self.heads[head](self.patch_features(x))  # [B, 1, h, w]
        raise ValueError(f"mode must be 'image' or 'patch', got {mode!r}")
