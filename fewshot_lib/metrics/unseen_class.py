"""Did a k-shot generator make a *new member of the shots' class*, or a blob, or a copy of a shot?

FID and LPIPS pool all unseen classes; they cannot say whether one sample belongs to the class its episode
showed. Three per-sample tests, each with its floor and ceiling in notebook 06 / 07:

* **class consistency** — the emoji network's subcategory head assigns the sample to the episode's own
  subcategory (an untrained LoFGAN scores ≈ 0.08; real held-out images of the class give the ceiling);
* **near-copy** — the sample is closer to one of its own shots than ``copy_ratio`` × the typical distance
  between two shots of the episode (the LPIPS-style distance of the extractor): a copy "passes" consistency
  for free, so the two are read together;
* **recognisable** — :func:`~fewshot_lib.metrics.recognisability.recognisability` against the unseen classes'
  real images.

Episodes are drawn by :func:`sample_episodes` (seeded; the same draw as
:func:`~fewshot_lib.metrics.protocols.evaluate_per_class`). Class names may be ``"style/subcategory"``; the
subcategory is the part after the last ``/``. Every number comes from ``emoji-features-v1`` (or the extractor
given) and is not comparable with paper metrics.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..progress import progress
from .diversity import pairwise_lpips, squared_distances
from .features import EmojiFeatures, FeatureExtractor
from .fid import fid
from .recognisability import recognisability
from .result import MetricResult, resolve_extractor

__all__ = ["sample_episodes", "subcategory_of", "class_consistency", "near_copy_fraction", "unseen_class_report"]


def subcategory_of(class_name: str) -> str:
    """``"noto/animal-bird"`` → ``"animal-bird"`` (class names of :func:`emoji_episode_classes`)."""
    return class_name.rsplit("/", 1)[-1]


def sample_episodes(generate: Callable[[torch.Tensor], torch.Tensor], conditioning: dict[str, torch.Tensor],
                    k: int = 3, n_per_class: int = 128, batch: int = 64, seed: int = 0
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``n_per_class`` samples per class, each from ``k`` shots drawn without replacement from the class's pool.

    ``generate``: ``shots [B, k, 3, H, W] → [B, 3, H, W]``. Returns ``(fakes, shots)``:
    ``{class: [n, 3, H, W]}`` and ``{class: [n, k, 3, H, W]}`` (the shots each sample was made from).
    """
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    g = torch.Generator().manual_seed(seed)
    fakes: dict[str, torch.Tensor] = {}
    episodes: dict[str, torch.Tensor] = {}
    for c in progress(list(conditioning), desc="generating per class"):
        pool = conditioning[c]
        if len(pool) < k:
            raise ValueError(f"class {c!r}: conditioning pool of {len(pool)} images < k={k}")
        picks = torch.stack([torch.randperm(len(pool), generator=g)[:k] for _ in range(n_per_class)])
        out = []
        for s in range(0, n_per_class, batch):
            with torch.no_grad():
                out.append(generate(pool[picks[s:s + batch]]).float().cpu())
        fakes[c], episodes[c] = torch.cat(out), pool[picks]
    return fakes, episodes


def _emoji(extractor, device) -> EmojiFeatures:
    ext = resolve_extractor(extractor, device)
    if not isinstance(ext, EmojiFeatures) or not ext.meta.get("subcategories"):
        raise ValueError(f"class consistency needs the emoji network's subcategory head; {ext.name!r} has none")
    return ext


def class_consistency(images_by_class: dict[str, torch.Tensor], extractor: str | FeatureExtractor = "emoji",
                      device: str | torch.device | None = None) -> MetricResult:
    """Share of images that the subcategory head assigns to their class's subcategory (``{class: [n, 3, H, W]}``);
    ``details["per_class"]`` holds each class's share, ``std`` their spread."""
    ext = _emoji(extractor, device)
    names = list(ext.meta["subcategories"])
    per_class: dict[str, float] = {}
    hits = total = 0
    for c, x in images_by_class.items():
        sub = subcategory_of(c)
        if sub not in names:
            raise ValueError(f"class {c!r}: subcategory {sub!r} is not one the emoji network knows")
        _, probs = ext.features_and_subcategories(x, show_progress=False)
        right = (probs.argmax(1) == names.index(sub))
        per_class[c] = float(right.float().mean())
        hits, total = hits + int(right.sum()), total + len(x)
    vals = np.array(list(per_class.values()))
    return MetricResult("class_consistency", hits / max(total, 1), ext.name,
                        std=float(vals.std(ddof=1)) if len(vals) > 1 else None, n_fake=total,
                        details={"per_class": per_class})


def near_copy_fraction(fakes: dict[str, torch.Tensor], shots: dict[str, torch.Tensor], copy_ratio: float = 0.25,
                       extractor: str | FeatureExtractor = "emoji", device: str | torch.device | None = None
                       ) -> MetricResult:
    """Share of samples closer to one of *their own* shots than ``copy_ratio · gap``.

    ``fakes {class: [n, 3, H, W]}``, ``shots {class: [n, k, 3, H, W]}`` from :func:`sample_episodes`; ``gap`` is
    the median over all episodes of the distance between a shot and the nearest other shot of its episode
    (the scale of "two different members of this class"), fixed before looking at samples.
    """
    ext = resolve_extractor(extractor, device)
    ratios, gaps = [], []
    for c in fakes:
        n, k = shots[c].shape[:2]
        e_fake = ext.distance_embedding(fakes[c], show_progress=False)                      # [n, P]
        e_shot = ext.distance_embedding(shots[c].flatten(0, 1), show_progress=False).view(n, k, -1)
        d = torch.stack([squared_distances(e_fake[i:i + 1], e_shot[i])[0] for i in range(n)])  # [n, k]
        ratios.append(d.min(1).values)
        if k > 1:
            dd = torch.stack([squared_distances(e_shot[i], e_shot[i]) for i in range(n)])    # [n, k, k]
            dd = dd + torch.eye(k).unsqueeze(0) * 1e12
            gaps.append(dd.min(2).values.flatten())
    if not gaps:
        raise ValueError("near-copies need k ≥ 2 shots per episode (the gap between shots sets the scale)")
    gap = float(torch.cat(gaps).median())
    nn = torch.cat(ratios) / gap
    return MetricResult("near_copy_fraction", float((nn < copy_ratio).float().mean()), ext.name, n_fake=len(nn),
                        details={"copy_ratio": copy_ratio, "shot_gap": gap, "nn_ratio_median": float(nn.median())})


def unseen_class_report(fakes: dict[str, torch.Tensor], shots: dict[str, torch.Tensor],
                        held_out: dict[str, torch.Tensor], manifold: torch.Tensor | None = None,
                        extractor: str | FeatureExtractor = "emoji", device: str | torch.device | None = None
                        ) -> dict[str, MetricResult]:
    """Everything a k-shot generator's unseen-class samples are judged by: ``class_consistency``,
    ``near_copies``, ``recognisability``, per-class ``lpips_diversity`` and pooled ``fid`` against the held-out
    reals.

    ``manifold``: the real images (or their features) whose k-NN manifold the recognisability test uses — pass
    the whole real set of the styles involved. The default, the held-out reals alone, is a small set with wide
    k-NN radii that lets blurry averages of shots pass.
    """
    ext = _emoji(extractor, device)
    real = torch.cat([held_out[c] for c in fakes])
    all_fake = torch.cat(list(fakes.values()))
    f_real = ext.features(real, show_progress=False)
    per_class = {c: pairwise_lpips(x, ext).value for c, x in fakes.items()}
    vals = np.array(list(per_class.values()))
    return {"class_consistency": class_consistency(fakes, ext),
            "near_copies": near_copy_fraction(fakes, shots, extractor=ext),
            "recognisability": recognisability(f_real if manifold is None else manifold, all_fake, extractor=ext),
            "lpips_diversity": MetricResult("pairwise_lpips_per_class", float(vals.mean()), ext.name,
                                            std=float(vals.std(ddof=1)) if len(vals) > 1 else None,
                                            n_fake=len(all_fake), details={"per_class": per_class}),
            "fid": fid(f_real, ext.features(all_fake, show_progress=False), ext)}
