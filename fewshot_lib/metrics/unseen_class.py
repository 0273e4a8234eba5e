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
from .pr import knn_radii
from .recognisability import recognisability_of_scores
from .result import MetricResult, as_features, resolve_extractor

__all__ = [
    "sample_episodes",
    "subcategory_of",
    "class_consistency",
    "class_consistency_of_probs",
    "near_copy_fraction",
    "UnseenClassJudge",
    "unseen_class_report",
]


def subcategory_of(class_name: str) -> str:
    """``"noto/animal-bird"`` → ``"animal-bird"`` (class names of :func:`emoji_episode_classes`)."""
    return class_name.rsplit("/", 1)[-1]


def sample_episodes(
    generate: Callable[[torch.Tensor], torch.Tensor],
    conditioning: dict[str, torch.Tensor],
    k: int = 3,
    n_per_class: int = 128,
    batch: int = 64,
    seed: int = 0,
    show_progress: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``n_per_class`` samples per class, each from ``k`` shots drawn without replacement from the class's pool.

    ``generate``: ``shots [B, k, 3, H, W] → [B, 3, H, W]``; ``show_progress``: a bar over the classes (off by
    default: a report runs it many times, each in seconds). Returns ``(fakes, shots)``:
    ``{class: [n, 3, H, W]}`` and ``{class: [n, k, 3, H, W]}`` (the shots each sample was made from).
    """
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    g = torch.Generator().manual_seed(seed)
    fakes: dict[str, torch.Tensor] = {}
    episodes: dict[str, torch.Tensor] = {}
    for c in progress(list(conditioning), desc="generating per class", disable=not show_progress):
        pool = conditioning[c]
        if len(pool) < k:
            raise ValueError(f"class {c!r}: conditioning pool of {len(pool)} images < k={k}")
        picks = torch.stack([torch.randperm(len(pool), generator=g)[:k] for _ in range(n_per_class)])
        out = []
        for s in range(0, n_per_class, batch):
            with torch.no_grad():
                out.append(generate(pool[picks[s : s + batch]]).float().cpu())
        fakes[c], episodes[c] = torch.cat(out), pool[picks]
    return fakes, episodes


def _emoji(extractor, device) -> EmojiFeatures:
    ext = resolve_extractor(extractor, device)
    if not isinstance(ext, EmojiFeatures) or not ext.meta.get("subcategories"):
        raise ValueError(
            f"class consistency needs the emoji network's subcategory head; {ext.name!r} has none"
        )
    return ext


def class_consistency(
    images_by_class: dict[str, torch.Tensor],
    extractor: str | FeatureExtractor = "emoji",
    device: str | torch.device | None = None,
) -> MetricResult:
    """Share of images that the subcategory head assigns to their class's subcategory (``{class: [n, 3, H, W]}``);
    ``details["per_class"]`` holds each class's share, ``std`` their spread."""
    ext = _emoji(extractor, device)
    probs = {c: ext.features_and_subcategories(x, show_progress=False)[1] for c, x in images_by_class.items()}
    return class_consistency_of_probs(probs, ext)


def class_consistency_of_probs(
    probs_by_class: dict[str, torch.Tensor], extractor: EmojiFeatures
) -> MetricResult:
    """:func:`class_consistency` from the subcategory probabilities ``{class: [n, S]}`` the emoji network already
    gave (``features_and_subcategories``)."""
    names = list(extractor.meta["subcategories"])
    per_class: dict[str, float] = {}
    hits = total = 0
    for c, probs in probs_by_class.items():
        sub = subcategory_of(c)
        if sub not in names:
            raise ValueError(f"class {c!r}: subcategory {sub!r} is not one the emoji network knows")
        right = probs.argmax(1) == names.index(sub)
        per_class[c] = float(right.float().mean())
        hits, total = hits + int(right.sum()), total + len(probs)
    vals = np.array(list(per_class.values()))
    return MetricResult(
        "class_consistency",
        hits / max(total, 1),
        extractor.name,
        std=float(vals.std(ddof=1)) if len(vals) > 1 else None,
        n_fake=total,
        details={"per_class": per_class},
    )


def _embed_shots(ext: FeatureExtractor, shots: torch.Tensor) -> torch.Tensor:
    """``[n, k, 3, H, W]`` → ``[n, k, P]``, embedding each distinct image once (episodes draw their shots from a
    pool of ~10 per class, so ``n·k`` shots hold few distinct images)."""
    n, k = shots.shape[:2]
    flat = shots.flatten(0, 1)  # [n·k, 3, H, W]
    distinct, index = torch.unique(flat.flatten(1), dim=0, return_inverse=True)  # [u, 3·H·W], [n·k]
    emb = ext.distance_embedding(distinct.view(-1, *flat.shape[1:]), show_progress=False)  # [u, P]
    return emb[index].view(n, k, -1)


def near_copy_fraction(
    fakes: dict[str, torch.Tensor],
    shots: dict[str, torch.Tensor],
    copy_ratio: float = 0.25,
    extractor: str | FeatureExtractor = "emoji",
    device: str | torch.device | None = None,
    fake_embeddings: dict[str, torch.Tensor] | None = None,
) -> MetricResult:
    """Share of samples closer to one of *their own* shots than ``copy_ratio · gap``.

    ``fakes {class: [n, 3, H, W]}``, ``shots {class: [n, k, 3, H, W]}`` from :func:`sample_episodes`; ``gap`` is
    the median over all episodes of the distance between a shot and the nearest other shot of its episode
    (the scale of "two different members of this class"), fixed before looking at samples.
    ``fake_embeddings``: the fakes' distance embeddings ``{class: [n, P]}`` if already computed.
    """
    ext = resolve_extractor(extractor, device)
    ratios, gaps = [], []
    for c in fakes:
        n, k = shots[c].shape[:2]
        e_fake = (
            fake_embeddings[c]
            if fake_embeddings is not None
            else ext.distance_embedding(fakes[c], show_progress=False)
        )  # [n, P]
        e_shot = _embed_shots(ext, shots[c])  # [n, k, P]
        d = torch.stack([squared_distances(e_fake[i : i + 1], e_shot[i])[0] for i in range(n)])  # [n, k]
        ratios.append(d.min(1).values)
        if k > 1:
            dd = torch.stack([squared_distances(e_shot[i], e_shot[i]) for i in range(n)])  # [n, k, k]
            dd = dd + torch.eye(k).unsqueeze(0) * 1e12
            gaps.append(dd.min(2).values.flatten())
    if not gaps:
        raise ValueError("near-copies need k ≥ 2 shots per episode (the gap between shots sets the scale)")
    gap = float(torch.cat(gaps).median())
    nn = torch.cat(ratios) / gap
    return MetricResult(
        "near_copy_fraction",
        float((nn < copy_ratio).float().mean()),
        ext.name,
        n_fake=len(nn),
        details={"copy_ratio": copy_ratio, "shot_gap": gap, "nn_ratio_median": float(nn.median())},
    )


class UnseenClassJudge:
    """:func:`unseen_class_report` for many generators on the same unseen classes: the held-out reals'
    features and the real manifold's k-NN radii are computed once, here, instead of once per report.

    >>> judge = UnseenClassJudge(held_out, manifold=every_real_emoji)
    >>> report = judge(fakes, shots)          # {"class_consistency": MetricResult, ...}
    >>> judge.values(fakes, shots)            # {"class_consistency": 0.57, ...}
    """

    def __init__(
        self,
        held_out: dict[str, torch.Tensor],
        manifold: torch.Tensor | None = None,
        extractor: str | FeatureExtractor = "emoji",
        device: str | torch.device | None = None,
        k: int = 3,
    ):
        self.ext = _emoji(extractor, device)
        self.k = k
        self.real_features = {
            c: self.ext.features(x, show_progress=False) for c, x in held_out.items()
        }  # {c: [m, D]}
        self.manifold = (
            torch.cat(list(self.real_features.values()))
            if manifold is None
            else as_features(manifold, self.ext, "manifold")
        )  # [M, D]
        self.radii = knn_radii(self.manifold, k)  # [M]

    def __call__(
        self, fakes: dict[str, torch.Tensor], shots: dict[str, torch.Tensor]
    ) -> dict[str, MetricResult]:
        missing = set(fakes) - set(self.real_features)
        if missing:
            raise ValueError(f"no held-out images for the classes {sorted(missing)}")
        ext = self.ext
        f_real = torch.cat([self.real_features[c] for c in fakes])
        # two passes of the emoji network over the samples: the classifier's (features + subcategory
        # probabilities: consistency, recognisability, FID) and the perceptual embedding (near-copies, LPIPS)
        f_fake, probs = ext.features_and_subcategories(torch.cat(list(fakes.values())), show_progress=False)
        ends = np.cumsum([0] + [len(x) for x in fakes.values()])
        probs_by_class = {c: probs[ends[i] : ends[i + 1]] for i, c in enumerate(fakes)}
        emb = {c: ext.distance_embedding(x, show_progress=False) for c, x in fakes.items()}  # {c: [n, P]}
        per_class = {c: pairwise_lpips(e, ext).value for c, e in emb.items()}
        vals = np.array(list(per_class.values()))
        return {
            "class_consistency": class_consistency_of_probs(probs_by_class, ext),
            "near_copies": near_copy_fraction(fakes, shots, extractor=ext, fake_embeddings=emb),
            "recognisability": recognisability_of_scores(
                self.manifold, self.radii, f_fake, probs, ext, k=self.k
            ),
            "lpips_diversity": MetricResult(
                "pairwise_lpips_per_class",
                float(vals.mean()),
                ext.name,
                std=float(vals.std(ddof=1)) if len(vals) > 1 else None,
                n_fake=len(f_fake),
                details={"per_class": per_class},
            ),
            "fid": fid(f_real, f_fake, ext),
        }

    def values(self, fakes: dict[str, torch.Tensor], shots: dict[str, torch.Tensor]) -> dict[str, float]:
        """The report's numbers only, ``{metric: value}`` — what an :class:`~fewshot_lib.experiments.Experiment`
        variant returns per seed."""
        return {name: result.value for name, result in self(fakes, shots).items()}


def unseen_class_report(
    fakes: dict[str, torch.Tensor],
    shots: dict[str, torch.Tensor],
    held_out: dict[str, torch.Tensor],
    manifold: torch.Tensor | None = None,
    extractor: str | FeatureExtractor = "emoji",
    device: str | torch.device | None = None,
) -> dict[str, MetricResult]:
    """Everything a k-shot generator's unseen-class samples are judged by: ``class_consistency``,
    ``near_copies``, ``recognisability``, per-class ``lpips_diversity`` and pooled ``fid`` against the held-out
    reals.

    ``manifold``: the real images (or their features) whose k-NN manifold the recognisability test uses — pass
    the whole real set of the styles involved. The default, the held-out reals alone, is a small set with wide
    k-NN radii that lets blurry averages of shots pass. Judging several generators on the same classes: build
    one :class:`UnseenClassJudge` and call it for each.
    """
    return UnseenClassJudge({c: held_out[c] for c in fakes}, manifold, extractor, device)(fakes, shots)
