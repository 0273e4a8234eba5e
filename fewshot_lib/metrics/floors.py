"""The image floors: the scores of things that are plainly *not* samples of the reference set.

A paper claim compares two generators. When both still draw coloured noise, one of them will win by chance
and the ledger would record a reproduced claim about noise. So :func:`fewshot_lib.results.make_claim` judges a
paper claim only when both sides beat these floors, measured once per reference set with the same extractor:

* **recognisability floor** — the reference images themselves shrunk to 8×8 and enlarged back (bilinear):
  the right palette and layout with every detail gone (Noto emoji: 0.40 against 0.96 for the images);
* **FID floor** — uniform noise in ``[-1, 1]`` against the reference set.

A generator whose samples score below the first or above the second is not yet drawing images of the domain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fid import fid
from .recognisability import recognisability
from .result import resolve_extractor

__all__ = ["shrink_and_enlarge", "image_floors", "side_evidence"]


def shrink_and_enlarge(images: torch.Tensor, size: int = 8) -> torch.Tensor:
    """``[N, 3, H, W]`` → the same shrunk to ``size``×``size`` (area) and enlarged back (bilinear)."""
    small = F.interpolate(images.float(), size=(size, size), mode="area")
    return F.interpolate(small, size=images.shape[-2:], mode="bilinear", align_corners=False).clamp(-1, 1)


def image_floors(
    reference: torch.Tensor,
    extractor="emoji",
    device=None,
    seed: int = 0,
    max_images: int = 2000,
    manifold: torch.Tensor | None = None,
    manifold_radii: torch.Tensor | None = None,
) -> dict:
    """``{"fid": .., "recognisability": .., "extractor": .., "n_reference": ..}`` for ``reference [N, 3, H, W]``
    in ``[-1, 1]`` (at most ``max_images`` of them, a seeded subset).

    ``manifold``: the real images (or their features) that the samples' recognisability is measured against,
    when that is not the reference itself (notebook 06 tests unseen-class samples against every real emoji of
    their styles): the floor must be measured against the same manifold to be comparable. ``manifold_radii``:
    its k-NN radii if already computed (``UnseenClassJudge.radii``).
    """
    ext = resolve_extractor(extractor, device)
    g = torch.Generator().manual_seed(seed)
    if len(reference) > max_images:
        reference = reference[torch.randperm(len(reference), generator=g)[:max_images]]
    f_ref = ext.features(reference, show_progress=False)
    noise = torch.rand(len(reference), *reference.shape[1:], generator=g) * 2 - 1
    against = f_ref if manifold is None else manifold
    return {
        "fid": float(fid(f_ref, ext.features(noise, show_progress=False), ext)),
        "recognisability": recognisability(
            against,
            shrink_and_enlarge(reference),
            extractor=ext,
            real_radii=manifold_radii if manifold is not None else None,
        ).value,
        "extractor": ext.name,
        "n_reference": len(reference),
    }


def side_evidence(per_seed: list[dict]) -> dict[str, float]:
    """The floor metrics of one side of a claim — means over its seeds of ``fid`` and ``recognisability`` (those
    present in every seed's dict) — for :func:`fewshot_lib.results.make_claim`'s ``method_side``/``baseline_side``."""
    keys = [k for k in ("fid", "recognisability") if per_seed and all(k in r for r in per_seed)]
    return {k: float(sum(float(r[k]) for r in per_seed) / len(per_seed)) for k in keys}
