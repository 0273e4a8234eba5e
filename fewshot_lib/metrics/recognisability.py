"""Recognisability: could a viewer *name* what a generator draws?

FID compares feature statistics of whole sets; it cannot say what share of the samples are emoji at all and
what share are blobs in emoji colours. This metric counts, per image, two tests that a recognisable emoji
passes and a blob fails:

1. **Named:** the emoji network's subcategory head (≈ 98 classes such as "face-smiling", "animal-mammal",
   "flag") gives its top class probability ≥ ``threshold`` (the confidence term of the Inception Score).
2. **Emoji-like:** its feature vector lies inside the real set's manifold, i.e. within the k-NN radius of
   some real image (the test behind *precision*, :mod:`fewshot_lib.metrics.pr`).

Either test alone is fooled: a classifier is over-confident on inputs unlike anything it was trained on
(uniform noise is named "event" with p ≈ 0.8, a flat grey square "geometric" with p ≈ 0.94), and the manifold
of 1,906 varied emoji is wide enough to contain most coloured blobs. Together they order images the way eyes
do. Calibration on the 1,906 Noto emoji through ``emoji-features-v1`` (k = 3, threshold 0.5):

    real images 0.96 · the same shrunk to 16 px and enlarged 0.90 · shrunk to 8 px 0.40 · uniform noise 0.00

**The yardstick for a generator is not 0.96.** The network was trained on those very images, so it remembers
them; a generator's new samples are never in that position. ``scripts/train_feature_net.py`` run C trains the
same recipe without a fifth of the Noto concepts (in every style) and scores their Noto drawings: real emoji of
concepts the network has never seen score 0.69, the ones it trained on 0.98 (381 Noto images each).
:func:`novel_emoji_reference` reads that run's figures from the shipped manifest; notebook 02 compares the
source models with them.

Like every number from the emoji network, it is not comparable with paper metrics.
"""

from __future__ import annotations

import json
from collections import Counter

import torch

from ..config import data_dir
from .features import EMOJI_MANIFEST, EmojiFeatures, FeatureExtractor
from .pr import in_manifold, knn_radii
from .result import MetricResult, as_features, resolve_extractor


def recognisability(
    real: torch.Tensor,
    fake: torch.Tensor,
    threshold: float = 0.5,
    k: int = 3,
    extractor: str | FeatureExtractor = "emoji",
    device: str | torch.device | None = None,
    top: int = 5,
    real_radii: torch.Tensor | None = None,
) -> MetricResult:
    """Fraction of ``fake [N, 3, H, W]`` images that are both named (subcategory p ≥ ``threshold``) and inside
    the k-NN manifold of ``real`` (images ``[M, 3, H, W]`` or their features ``[M, D]``), both in ``[-1, 1]``.

    ``real_radii``: ``knn_radii(real features, k)`` computed once, when one real set judges many fakes (the
    radii cost O(M²)). ``details``: the fraction passing each test alone, the mean top probability, and the
    ``top`` commonest subcategories among the recognisable images.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    ext = resolve_extractor(extractor, device)
    if not isinstance(ext, EmojiFeatures):
        raise ValueError(f"recognisability needs the emoji network's subcategory head; {ext.name!r} has none")
    if fake.dim() != 4:
        raise ValueError(
            f"fake must be images [N, 3, H, W] (the classifier needs pixels), got {tuple(fake.shape)}"
        )
    f_real = as_features(real, ext, "real")  # [M, D]
    if real_radii is None:
        real_radii = knn_radii(f_real, k)  # [M]
    f_fake, probs = ext.features_and_subcategories(fake)  # [N, D], [N, n_subcategories]
    return recognisability_of_scores(f_real, real_radii, f_fake, probs, ext, threshold, k, top)


def recognisability_of_scores(
    f_real: torch.Tensor,
    real_radii: torch.Tensor,
    f_fake: torch.Tensor,
    probs: torch.Tensor,
    extractor: EmojiFeatures,
    threshold: float = 0.5,
    k: int = 3,
    top: int = 5,
) -> MetricResult:
    """:func:`recognisability` from what the emoji network already said about the fakes — features ``[N, D]``
    and subcategory probabilities ``[N, S]`` (``features_and_subcategories``) — and the real set's features
    ``[M, D]`` with their k-NN radii ``[M]``: for callers that need the same pass for other metrics."""
    if real_radii.shape != (len(f_real),):
        raise ValueError(
            f"real_radii must be [{len(f_real)}] (one radius per real sample), got {tuple(real_radii.shape)}"
        )
    confidence, label = probs.max(dim=1)  # [N], [N]
    named = confidence >= threshold
    inside = in_manifold(f_fake, f_real, real_radii).any(dim=1)  # [N]
    both = named & inside
    names = extractor.meta.get("subcategories") or []
    counts = Counter(names[i] if i < len(names) else str(i) for i in label[both].tolist())
    return MetricResult(
        "recognisability",
        float(both.float().mean()),
        extractor.name,
        n_real=len(f_real),
        n_fake=len(f_fake),
        details={
            "threshold": threshold,
            "k": k,
            "named": float(named.float().mean()),
            "inside_real_manifold": float(inside.float().mean()),
            "mean_confidence": float(confidence.mean()),
            "commonest": dict(counts.most_common(top)),
        },
    )


def recognisable_examples(
    images: torch.Tensor, real_features: torch.Tensor, extractor: EmojiFeatures, n: int, k: int = 3
) -> tuple[torch.Tensor, list[str], int]:
    """Up to ``n`` of ``images [N, 3, H, W]`` a reader can recognise, for a figure: the most confident image of
    each subcategory (varied concepts, not ``n`` flags) among those inside the k-NN manifold of
    ``real_features [M, D]`` — the two tests of :func:`recognisability`.

    Returns ``(indices [≤ n], labels "<subcategory> <p>", how many images pass both tests at p ≥ 0.5)``."""
    f_img, probs = extractor.features_and_subcategories(images, show_progress=False)  # [N, D], [N, S]
    confidence, label = probs.max(dim=1)  # [N], [N]
    inside = in_manifold(f_img, real_features, knn_radii(real_features, k)).any(dim=1)  # [N]
    first: dict[int, int] = {}
    for i in (confidence * inside).argsort(descending=True).tolist():
        first.setdefault(int(label[i]), i)
    chosen = torch.tensor(list(first.values())[:n], dtype=torch.long)
    names = extractor.meta["subcategories"]
    labels = [f"{names[label[i]]} {confidence[i]:.2f}" for i in chosen.tolist()]
    return chosen, labels, int(((confidence >= 0.5) & inside).sum())


def can_recognise(extractor: FeatureExtractor) -> bool:
    """Whether ``extractor`` has the subcategory head :func:`recognisability` needs (the untrained control and
    the ImageNet networks do not; their callers report NaN instead)."""
    return (
        isinstance(extractor, EmojiFeatures) and getattr(extractor.net, "subcategory_head", None) is not None
    )


def novel_emoji_reference() -> dict | None:
    """Run C of ``scripts/train_feature_net.py`` as recorded in the shipped emoji network's manifest, or ``None``
    if it was not recorded: ``{"novel": .., "seen": .., "n_novel": .., "command": ..}`` — the recognisability of
    real Noto emoji whose concepts that run's network never saw (in any style), and of as many it trained on."""
    path = data_dir() / EMOJI_MANIFEST
    run = json.loads(path.read_text()).get("novel_concept_run") if path.is_file() else None
    if not run:
        return None
    return {
        "novel": run["novel_noto_recognisability"],
        "seen": run["seen_noto_recognisability"],
        "n_novel": run["n_novel_noto"],
        "command": run["command"],
    }
