"""Offline evaluation of (few-shot) generators: one import for every metric.

>>> from fewshot_lib import metrics as M
>>> M.fid(real, fake)                         # MetricResult: FID[emoji] = 12.3 (n_real=.., n_fake=..)
>>> M.kid(real, fake)                         # unbiased KID, mean ± std over subsets
>>> M.precision_recall(real, fake)            # {"precision": .., "recall": ..}   (Kynkäänniemi et al.)
>>> M.density_coverage(real, fake)            # {"density": .., "coverage": ..}   (Naeem et al.)
>>> M.pairwise_lpips(fake)                    # mean LPIPS over all pairs (diversity)
>>> M.intra_cluster_lpips(fake, shots)        # CDC: assign to nearest shot, diversity inside clusters
>>> M.nn_modes(fake, shots)                   # how many shots are someone's nearest neighbour
>>> M.ppl_uniformity(g_fn, w0, w1)            # MixDL: smoothness of 10-step latent walks
>>> M.recognisability(real, fake)             # share of samples named by the emoji net and inside the real set
>>> M.evaluate_against_set(fake, target, train=shots)              # CDC / MixDL protocol, all of the above
>>> M.evaluate_per_class(generate_fn, conditioning, held_out)      # LoFGAN / LSO protocol
>>> M.evaluate_generator(G, shots, reference)  # one unconditional generator: seeded samples, walks (MixDL)
>>> M.memorisation_metrics(G, shots)          # how much a generator copies its shots, how stairlike its walks are

Inputs are images ``[N, 3, H, W]`` in ``[-1, 1]`` (any size; the emoji extractor resizes to 32×32). FID/KID/P/R/D/C
also accept precomputed features ``[N, D]`` from ``extractor.features(images)`` — compute the real set's once
when comparing many generators. Every function takes ``extractor=`` (default ``"emoji"``) as a name or a
:class:`FeatureExtractor`, and returns :class:`MetricResult` objects (``.value``, ``.std``, ``.extractor``,
``.n_real``, ``.n_fake``, ``.details``; ``str(r)`` prints the extractor next to the value;
``results_to_dict`` prepares them for ``write_metrics``).

Extractors (``get_extractor(name)``): ``"emoji"`` — the project's network trained on the embedded emoji
(offline default; not comparable with paper numbers); ``"emoji-random"`` — same architecture untrained (a
control); ``"inception"`` and ``"lpips-alex"``/``"lpips-vgg"`` — the papers' ImageNet networks, only when their
weight files are already on disk (never downloaded; a ``FileNotFoundError`` explains how to get them).

Taught in: ``notebooks/03_evaluation.ipynb``.
"""

from .diversity import assign_to_nearest, intra_cluster_lpips, nn_modes, pairwise_lpips, squared_distances
from .features import (
    EXTRACTOR_NAMES,
    EmojiFeatureNet,
    EmojiFeatures,
    FeatureExtractor,
    InceptionFeatures,
    LPIPSFeatures,
    emoji_extractor,
    get_extractor,
    load_emoji_feature_net,
    random_emoji_extractor,
)
from .generator import (
    evaluate_generator,
    fixed_noise_synthesis,
    interpolation_walk,
    memorisation_metrics,
    shot_copy_metrics,
    walk_step_shares,
)
from .fid import feature_statistics, fid, frechet_distance, kid, polynomial_mmd_unbiased
from .ppl import lerp, ppl_uniformity
from .pr import density_coverage, knn_radii, precision_recall
from .protocols import (
    SET_METRICS,
    conditioning_split,
    evaluate_against_set,
    evaluate_per_class,
    results_to_dict,
)
from .recognisability import novel_emoji_reference, recognisability
from .result import MetricResult, resolve_extractor
from .unseen_class import (
    UnseenClassJudge,
    class_consistency,
    near_copy_fraction,
    sample_episodes,
    unseen_class_report,
)

__all__ = [
    "EXTRACTOR_NAMES",
    "EmojiFeatureNet",
    "EmojiFeatures",
    "FeatureExtractor",
    "InceptionFeatures",
    "LPIPSFeatures",
    "MetricResult",
    "SET_METRICS",
    "assign_to_nearest",
    "conditioning_split",
    "density_coverage",
    "emoji_extractor",
    "evaluate_against_set",
    "evaluate_generator",
    "evaluate_per_class",
    "fixed_noise_synthesis",
    "interpolation_walk",
    "memorisation_metrics",
    "shot_copy_metrics",
    "walk_step_shares",
    "feature_statistics",
    "fid",
    "frechet_distance",
    "get_extractor",
    "intra_cluster_lpips",
    "kid",
    "knn_radii",
    "lerp",
    "load_emoji_feature_net",
    "nn_modes",
    "novel_emoji_reference",
    "pairwise_lpips",
    "polynomial_mmd_unbiased",
    "ppl_uniformity",
    "precision_recall",
    "random_emoji_extractor",
    "recognisability",
    "resolve_extractor",
    "results_to_dict",
    "squared_distances",
    "UnseenClassJudge",
    "class_consistency",
    "near_copy_fraction",
    "sample_episodes",
    "unseen_class_report",
]
