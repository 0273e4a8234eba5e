"""The experiment protocol, once for every notebook: seeds × variants → per-seed table → summary → claims →
``metrics.json``.

A method notebook asks one question over several seeds ("does CDC keep more diversity than TGAN?"). The
protocol is the same every time, so it lives here and notebooks declare only *what* differs::

    exp = Experiment("04_cdc", variants={"tgan": run_tgan, "cdc": run_cdc}, seeds=seeds_for("04_cdc", profile, seed))
    result = exp.run()                                # each variant(seed) → {"fid": .., "intra_cluster_lpips": ..}
    print(result.table())                             # mean ± sample std per variant and metric
    claims = [result.claim("CDC keeps more diversity", "intra_cluster_lpips", "cdc", "tgan", higher_is_better=True,
                           floors=floors)]
    result.write(run_dir, notebook="04_cdc", profile=profile, claims=claims)

Rules that used to differ between notebooks, fixed here:

* **one std rule**: the sample standard deviation (``ddof=1``) over seeds; with one seed there is none — the
  summary says ``"one seed"`` and the std is ``None``, never a silent 0 or NaN;
* **sizes per profile in one table** (:data:`PROFILE_SIZES`): ``sizes("04_cdc", profile)`` is what the
  notebook, ``fewshot run --profile`` and the README's runtime table mean by that profile; a notebook
  parameter left at 0 takes the table's value;
* **one CPU-thread policy** (:func:`cpu_threads`): the models of this course are small, and on a 2-core machine
  extra intra-op threads only fight each other and any background job — one thread unless asked otherwise.

Claims go through :func:`fewshot_lib.results.make_claim` (the ledger's rule) with each side's per-seed values and
the image-floor evidence (the means of ``fid`` / ``recognisability`` when the variants report them).
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .models.stylegan2 import SOURCE_MODEL_CONFIG
from .config import resolve_profile
from .progress import progress
from .results import make_claim, write_metrics

__all__ = [
    "PROFILE_SIZES",
    "sizes",
    "CUT_SHORT_ENV",
    "CUT_SHORT_CAPS",
    "CUT_SHORT_CAPS_BY_EXPERIMENT",
    "KEPT_WHEN_CUT_SHORT",
    "cut_short",
    "cut_short_sizes",
    "seeds_for",
    "cpu_threads",
    "Summary",
    "summarize",
    "Experiment",
    "ExperimentResult",
]

#: experiment → profile → sizes. The single place where a profile's meaning per notebook is written down.
PROFILE_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    # 02: the StyleGAN2 trained live (model: Generator kwargs; full: the shipped source model's architecture),
    # n_fid generated images per FID, proj_steps of the projector, explore_samples mapped latents of the explorer
    "02_stylegan2_training": {
        "smoke": dict(
            steps=8,
            batch=4,
            model=dict(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=32),
            n_fid=256,
            sample_every=4,
            proj_steps=20,
            ema_half_life_images=100,
            r1_every=4,
            explore_samples=1000,
        ),
        "lab": dict(
            steps=600,
            batch=16,
            model=dict(size=32, style_dim=64, n_mlp=2, channel_base=1024, channel_max=32),
            n_fid=1000,
            sample_every=200,
            proj_steps=200,
            ema_half_life_images=2_000,
            r1_every=16,
            explore_samples=5000,
        ),
        "full": dict(
            steps=20_000,
            batch=32,
            model=dict(SOURCE_MODEL_CONFIG),
            n_fid=5000,
            sample_every=2000,
            proj_steps=500,
            ema_half_life_images=10_000,
            r1_every=16,
            explore_samples=10_000,
        ),
    },
    # 03: n_fake fakes per hand-made generator, n_seeds shot/split draws; per_class_n fakes per unseen class,
    # ppl_paths latent walks, n_concepts for the cross-style retrieval (full: n_fake stays below set B's 792)
    "03_evaluation": {
        "smoke": dict(n_fake=150, n_seeds=2, per_class_n=8, ppl_paths=8, n_concepts=200),
        "lab": dict(n_fake=700, n_seeds=3, per_class_n=32, ppl_paths=64, n_concepts=800),
        "full": dict(n_fake=780, n_seeds=5, per_class_n=128, ppl_paths=256, n_concepts=1500),
    },
    # 04: n_curve_points evaluations along the first seed's training (eval_every = steps // n_curve_points)
    # 04: steps / n_seeds = the live demonstration's; shipped_min_steps = how long a shipped adaptation
    # (scripts/train_adaptation.py) must have trained to be compared: the CDC reference's 5,000 at batch 4
    "04_cdc": {
        "smoke": dict(steps=4, n_seeds=1, n_eval=64, n_curve_points=1, shipped_min_steps=5000),
        "lab": dict(steps=200, n_seeds=3, n_eval=500, n_curve_points=6, shipped_min_steps=5000),
        "full": dict(steps=5000, n_seeds=3, n_eval=5000, n_curve_points=10, shipped_min_steps=5000),
    },
    # 05: model = the StyleGAN2 built for every run (lab: methods.mixdl.LAB_MODEL, the showcase's model);
    # showcase_samples / showcase_paths measure the shipped long-trained generators
    "05_mixdl": {
        "smoke": dict(
            steps=6,
            n_seeds=1,
            n_eval=64,
            n_paths=8,
            showcase_samples=64,
            showcase_paths=8,
            model=dict(size=32, style_dim=16, n_mlp=2, channel_base=32 * 8, channel_max=8),
        ),
        "lab": dict(
            steps=300,
            n_seeds=3,
            n_eval=200,
            n_paths=32,
            showcase_samples=256,
            showcase_paths=32,
            model=dict(size=32, style_dim=64, n_mlp=2, channel_base=32 * 32, channel_max=32),
        ),
        "full": dict(
            steps=20_000,
            n_seeds=3,
            n_eval=5000,
            n_paths=1000,
            showcase_samples=256,
            showcase_paths=32,
            model=dict(size=32, style_dim=256, n_mlp=8, channel_base=32 * 256, channel_max=256),
        ),
    },
    # 06: steps / n_seeds = the live demonstration's; shipped_min_steps = how long a shipped run must have trained
    # to enter the comparison (runs in progress ship between sessions; compared at unequal lengths they would
    # confound the method with its training time)
    "06_lofgan": {
        "smoke": dict(steps=6, n_seeds=2, n_per_class=8, shipped_min_steps=10_000),
        "lab": dict(steps=300, n_seeds=3, n_per_class=48, shipped_min_steps=10_000),
        "full": dict(steps=20_000, n_seeds=3, n_per_class=128, shipped_min_steps=10_000),
    },
    # 07: live = steps of a task run in the notebook (inversion, LAL, LSR) and its batch; live_comparison = what
    # the comparison shrinks to when it must run live at that profile (no shipped samples): one live task costs
    # ≈ 4 CPU-minutes at the lab steps, so the lab comparison becomes a labelled one-seed demonstration
    "07_lso": {
        "smoke": dict(
            n_seeds=1,
            n_per_class=8,
            n_classes=2,
            n_episodes=1,
            live=dict(invert=8, lal=3, lsr=3, batch=4),
            live_comparison=None,
        ),
        "lab": dict(
            n_seeds=3,
            n_per_class=32,
            n_classes=6,
            n_episodes=3,
            live=dict(invert=100, lal=60, lsr=60, batch=8),
            live_comparison=dict(n_seeds=1, n_classes=2, n_episodes=1, invert=30, lal=20, lsr=20),
        ),
        "full": dict(
            n_seeds=3,
            n_per_class=128,
            n_classes=17,
            n_episodes=10,
            live=dict(invert=200, lal=125, lsr=375, batch=16),
            live_comparison=None,
        ),
    },
    # 09: the benchmark evaluates shipped generators only. n_per_class samples per unseen class (n_classes: the
    # first few unseen classes, 0 = all 26); n_eval samples per shot-set generator; n_seeds shot draws per target
    # style (shipped exports of other shot seeds join them); shipped_min_steps as in 06; n_show samples per
    # picture row
    "09_benchmark": {
        "smoke": dict(
            n_per_class=6,
            n_classes=4,
            n_eval=64,
            n_seeds=1,
            styles=("fluent_3d", "twemoji"),
            shipped_min_steps=10_000,
            n_show=6,
        ),
        "lab": dict(
            n_per_class=32,
            n_classes=0,
            n_eval=300,
            n_seeds=3,
            styles=("fluent_3d", "twemoji"),
            shipped_min_steps=10_000,
            n_show=8,
        ),
        "full": dict(
            n_per_class=128,
            n_classes=0,
            n_eval=5000,
            n_seeds=3,
            styles=("fluent_3d", "twemoji", "fluent_flat"),
            shipped_min_steps=10_000,
            n_show=8,
        ),
    },
    # 08: n_samples mapped latents for GANSpace and the slider units; label_seeds for naming directions with the
    # emoji network; n_label directions labelled per method (section 9 loads the shipped adaptations: no training)
    "08_latent_explorer": {
        "smoke": dict(
            n_samples=2000,
            label_seeds=dict(seeds=range(4), select_seeds=range(1000, 1002), min_seeds=3),
            n_label=2,
            proj_steps=20,
        ),
        "lab": dict(
            n_samples=10_000,
            label_seeds=dict(seeds=range(10), select_seeds=range(1000, 1010), min_seeds=8),
            n_label=4,
            proj_steps=200,
        ),
        "full": dict(
            n_samples=20_000,
            label_seeds=dict(seeds=range(10), select_seeds=range(1000, 1010), min_seeds=8),
            n_label=8,
            proj_steps=500,
        ),
    },
}


# ---------------------------------------------------------------------------------------------------------
# Cut-short mode: the profile's code with its counts capped
# ---------------------------------------------------------------------------------------------------------
#: Set to 1 to run a profile *cut short*: :func:`sizes` caps every count of the table (steps, seeds, evaluation
#: sizes, samples, paths, projector steps, episodes, …) at :data:`CUT_SHORT_CAPS` and leaves everything else (the
#: models, batch sizes, intervals, thresholds, styles) at the profile's value. ``FEWSHOT_PROFILE=full`` with it
#: runs every cell of the full profile in minutes: tests/test_full_profile.py on CPU, scripts/gpu_check.sh on a
#: GPU. The kernels of papermill, nbval and ``fewshot run`` inherit it from the environment.
CUT_SHORT_ENV = "FEWSHOT_CUT_SHORT"

#: Size name → its cap in cut-short mode, in every experiment that has that size. The caps are about the
#: smoke profile's values, which the smoke notebooks prove every cell runs with (FID and KID need ≥ 2 samples,
#: precision/recall more than their k = 3 or 5 neighbours, near-copies k ≥ 2 shots), unless a reason below says
#: otherwise. What costs time in a cut-short notebook is then what every profile pays (reference features, image
#: floors) plus the full models' forward passes.
CUT_SHORT_CAPS: dict[str, int] = {
    # Optimisation steps: two run every kind of step once — R1 and path length fire at step 0, MixDL's mixup
    # step is step 0 and its plain step step 1, LoFGAN's learning-rate decay starts at steps // 2 = 1 — and the
    # trainers' final samples and checkpoints.
    "steps": 2,
    "sample_every": 1,  # 02: below the capped steps, so the sample callback (the FID curve) fires mid-training
    "n_curve_points": 1,  # 04: eval_every = steps // n_curve_points: one evaluation per curve, at the end
    "proj_steps": 10,  # 02, 08: the projector's iterations (its loss, W and W+ paths run from the first one)
    "invert": 8,  # 07 live tasks: inversion steps (8 still lower the reconstruction error, asserted in 07)
    "lal": 3,  # 07: LSO stage 1 steps
    "lsr": 3,  # 07: LSO stage 2 steps
    # Seeds: one; a notebook whose cells treat later seeds differently gets two (CUT_SHORT_CAPS_BY_EXPERIMENT).
    # With one seed a claim is "not judged: one seed"; judging claims is results.make_claim's, unit-tested.
    "n_seeds": 1,
    # Evaluation sizes.
    # 02: images per FID, half the emoji network's 256 feature dimensions: fid() warns (singular covariance,
    # biased value) but computes it, and 02 samples n_fid images from the full model nine times
    "n_fid": 128,
    "n_fake": 150,  # 03: its sample-size curve keeps n = 25, 50, 100 (FID's bias > 3 spreads: asserted)
    "n_eval": 32,  # 04, 05, 09: generated images per evaluation (> the 10 shots' clusters; k-NN radii need > 5)
    "n_per_class": 8,  # 06, 07, 09: samples per unseen class
    "per_class_n": 8,  # 03: the same, per unseen class of the per-class protocol
    "n_concepts": 200,  # 03: cross-style retrieval (the trained network beats the random one by > 2×: asserted)
    "ppl_paths": 8,  # 03: PPL latent walks
    "n_paths": 4,  # 05: PPL latent walks (each renders 11 images with the full model)
    "showcase_samples": 64,  # 05: samples of the shipped showcase generators
    "showcase_paths": 8,  # 05: their latent walks
    "n_classes": 2,  # 07, 09: unseen classes evaluated (09's 0 = all 26 becomes 2); 07 runs live tasks per class
    "n_episodes": 1,  # 07: tasks per class
    "explore_samples": 1000,  # 02: mapped latents of the explorer (its PCA of the 128-d W needs ≫ 128)
    "n_samples": 2000,  # 08: mapped latents for GANSpace and the slider units
    "n_label": 2,  # 08: directions labelled per method
    "seeds": 4,  # 08 label_seeds: seeds a direction's label is tested on …
    "select_seeds": 2,  # … seeds it is chosen on …
    "min_seeds": 3,  # … and how many must agree (≤ the capped seeds, or no label could ever be kept)
}

#: Caps that differ for one experiment.
CUT_SHORT_CAPS_BY_EXPERIMENT: dict[str, dict[str, int]] = {
    # 04 evaluates its first seed along the training curve and every later seed once at the end: a second seed
    # runs that branch.
    "04_cdc": {"n_seeds": 2},
    # 05's full StyleGAN2 is the largest model trained live (≈ 50 ms an image on one core) and every sample
    # callback renders 64 images with it: one step (a mixup step) and the final callback, for each of 4 variants.
    "05_mixdl": {"steps": 1},
}

#: Sizes that are not counts: kept at the profile's value in cut-short mode. Capping them would change *what* runs
#: (the architecture, the batch, an interval, which shipped runs are compared), not how long.
KEPT_WHEN_CUT_SHORT = frozenset(
    {
        "model",  # 02, 05: Generator kwargs (full: the shipped source model's)
        "batch",  # 02, 07 live: images per step
        "ema_half_life_images",  # 02: a hyperparameter of G_ema
        "r1_every",  # 02: lazy R1 interval (R1 fires at step 0 whatever it is)
        "shipped_min_steps",  # 04, 06, 09: a shipped run's admission threshold, not work done here
        "styles",  # 09: the target styles benchmarked (the tasks themselves)
        "n_show",  # 09: samples per picture row (display)
    }
)

#: Sizes where 0 means "all": cut short, they take the cap instead.
_ZERO_MEANS_ALL = frozenset({"n_classes"})


def cut_short() -> bool:
    """Whether cut-short mode is on (``FEWSHOT_CUT_SHORT`` set to ``1``/``true``/``yes``)."""
    return os.environ.get(CUT_SHORT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def cut_short_sizes(table: dict[str, Any], experiment: str = "") -> dict[str, Any]:
    """``table`` (the sizes of ``experiment``) with every count capped at :data:`CUT_SHORT_CAPS` (and the
    experiment's :data:`CUT_SHORT_CAPS_BY_EXPERIMENT`), nested tables such as 07's ``live`` too, and the sizes of
    :data:`KEPT_WHEN_CUT_SHORT` unchanged. A size in neither is refused: whether it is a count is decided once,
    here, not guessed."""
    caps = {**CUT_SHORT_CAPS, **CUT_SHORT_CAPS_BY_EXPERIMENT.get(experiment, {})}
    return _cut_short(table, caps, experiment)


def _cut_short(table: dict[str, Any], caps: dict[str, int], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in table.items():
        path = f"{where}.{name}" if where else name
        if name in KEPT_WHEN_CUT_SHORT or value is None:
            out[name] = value
        elif name in caps:
            out[name] = _cap(value, caps[name], name, path)
        elif isinstance(value, dict):
            out[name] = _cut_short(value, caps, path)
        else:
            raise ValueError(
                f"size {path!r} is neither capped (CUT_SHORT_CAPS) nor kept (KEPT_WHEN_CUT_SHORT) in cut-short "
                "mode; add it to one of them in fewshot_lib/experiments.py"
            )
    return out


def _cap(value: Any, cap: int, name: str, path: str) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"size {path!r} is a flag, not a count: it cannot be capped")
    if isinstance(value, int):
        return cap if value == 0 and name in _ZERO_MEANS_ALL else min(value, cap)
    if isinstance(value, (range, list, tuple)):
        return value[:cap]  # a range stays a range
    raise ValueError(f"size {path!r} = {value!r} is not a count or a sequence: it cannot be capped")


def sizes(experiment: str, profile: str, **overrides: Any) -> dict[str, Any]:
    """The sizes of ``experiment`` at ``profile``; an override that is not ``0``/``None`` wins (notebook
    parameters default to 0 = "the profile's value"). In cut-short mode (:data:`CUT_SHORT_ENV`) the table's counts
    are capped first; an explicit override still wins."""
    if experiment not in PROFILE_SIZES:
        raise ValueError(f"unknown experiment {experiment!r}; known: {sorted(PROFILE_SIZES)}")
    table = copy.deepcopy(PROFILE_SIZES[experiment][resolve_profile(profile)])  # callers may edit theirs
    unknown = set(overrides) - set(table)
    if unknown:
        raise ValueError(f"{experiment} has no size(s) {sorted(unknown)}; its sizes are {sorted(table)}")
    if cut_short():
        table = cut_short_sizes(table, experiment)
    table.update({k: v for k, v in overrides.items() if v not in (0, None)})
    return table


def seeds_for(experiment: str, profile: str, first: int = 0, n_seeds: int = 0) -> list[int]:
    """``first, first + 1, …``: the profile's number of seeds (or ``n_seeds``); the notebook's ``seed`` parameter
    is the first one, so a sweep over ``seed`` must not overlap another run's seeds."""
    n = n_seeds or sizes(experiment, profile)["n_seeds"]
    return list(range(first, first + n))


def cpu_threads(device: torch.device | str = "cpu", threads: int | None = None) -> int:
    """Set and return torch's CPU threads: ``threads`` if given, else ``FEWSHOT_THREADS``, else 1 (small models
    gain nothing from more on a shared CPU). Does nothing on an accelerator."""
    if torch.device(device).type != "cpu":
        return torch.get_num_threads()
    n = int(threads or os.environ.get("FEWSHOT_THREADS") or 1)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


@dataclass
class Summary:
    """Mean and sample std of one metric over seeds (``std`` is ``None`` with one seed: it is unknown)."""

    mean: float
    std: float | None
    n: int
    values: list[float]

    @property
    def label(self) -> str:
        if self.n == 0:
            return "no value"
        if self.std is None:
            return f"{self.mean:.4g} (one seed)"
        return f"{self.mean:.4g} ± {self.std:.2g}"


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample standard deviation (``ddof=1``) of the finite ``values``; NaNs (a metric a seed could not
    compute) are left out and counted out of ``n``."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return Summary(float("nan"), None, 0, [])
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return Summary(mean, std, len(vals), vals)


@dataclass
class ExperimentResult:
    """Per-seed metrics ``{variant: [{"seed": s, metric: value, ...}, ...]}`` and what is derived from them."""

    name: str
    per_seed: dict[str, list[dict[str, Any]]]
    seconds: dict[str, float] = field(default_factory=dict)

    def values(self, variant: str, metric: str) -> list[float]:
        """Every seed's value of ``metric``; a seed that reports it as ``None`` (not recorded, e.g. an older
        manifest without CPU time) is left out, not counted as a number."""
        return [float(r[metric]) for r in self.per_seed[variant] if r.get(metric) is not None]

    def summary(self, variant: str, metric: str) -> Summary:
        return summarize(self.values(variant, metric))

    def metrics(self) -> list[str]:
        """Every numeric metric some variant reports, in first-seen order."""
        names: dict[str, None] = {}
        for rows in self.per_seed.values():
            for r in rows:
                names.update(
                    {
                        k: None
                        for k, v in r.items()
                        if k != "seed" and isinstance(v, (int, float)) and not isinstance(v, bool)
                    }
                )
        return list(names)

    def table(self, metrics: Sequence[str] | None = None, width: int = 22) -> str:
        """A plain-text table: one row per variant, mean ± std (or "one seed") per metric, at least ``width``
        characters per column (metric names are cut to fit; a column widens so its values never touch)."""
        metrics = list(metrics or self.metrics())
        labels = {(v, m): self.summary(v, m).label for v in self.per_seed for m in metrics}
        widths = {m: max([width] + [len(labels[v, m]) + 2 for v in self.per_seed]) for m in metrics}
        head = f"{'variant':16s}" + "".join(f"{m[: widths[m] - 2]:>{widths[m]}s}" for m in metrics)
        rows = [head] + [
            f"{v:16s}" + "".join(f"{labels[v, m]:>{widths[m]}s}" for m in metrics) for v in self.per_seed
        ]
        return "\n".join(rows)

    def side(self, variant: str) -> dict[str, float]:
        """Image-floor evidence of one variant: the means of ``fid`` and ``recognisability`` it reports."""
        out = {}
        for metric in ("fid", "recognisability"):
            s = self.summary(variant, metric)
            if s.n:
                out[metric] = s.mean
        return out

    def claim(
        self,
        claim: str,
        metric: str,
        method: str,
        baseline: str,
        higher_is_better: bool,
        extractor: str = "emoji-features-v1",
        test: str = "better",
        kind: str = "paper",
        floors: dict[str, float] | None = None,
        **extra: Any,
    ) -> dict:
        """A ledger entry from the per-seed values of ``method`` and ``baseline`` (with floor evidence for a paper
        claim when ``floors`` is given)."""
        evidence = (
            dict(floors=floors, method_side=self.side(method), baseline_side=self.side(baseline))
            if floors is not None
            else {}
        )
        return make_claim(
            claim,
            metric,
            extractor,
            method,
            baseline,
            self.values(method, metric),
            self.values(baseline, metric),
            higher_is_better,
            test=test,
            kind=kind,
            **evidence,
            **extra,
        )

    def as_dict(self) -> dict[str, Any]:
        table = {
            v: {
                m: {"mean": s.mean, "std": s.std, "n": s.n}
                for m in self.metrics()
                for s in [self.summary(v, m)]
            }
            for v in self.per_seed
        }
        return {"experiment": self.name, "per_seed": self.per_seed, "summary": table, "seconds": self.seconds}

    def write(
        self,
        run_dir: str | os.PathLike,
        notebook: str,
        profile: str,
        claims: list[dict] | None = None,
        **metrics: Any,
    ) -> Path:
        """``metrics.json`` with the per-seed table, the summary, any extra ``metrics`` and the claims."""
        return write_metrics(
            run_dir, {**self.as_dict(), **metrics}, notebook=notebook, profile=profile, claims=claims
        )


@dataclass
class Experiment:
    """``variants``: name → ``fn(seed) -> {metric: value}``; every variant runs on every seed (seed-major, so
    that an interrupted run has complete seeds), with a progress bar and its time recorded."""

    name: str
    variants: dict[str, Callable[[int], dict[str, Any]]]
    seeds: Sequence[int]

    def run(self, show_progress: bool = True) -> ExperimentResult:
        if not self.seeds:
            raise ValueError(f"{self.name}: no seeds to run")
        per_seed: dict[str, list[dict[str, Any]]] = {v: [] for v in self.variants}
        seconds: dict[str, float] = {v: 0.0 for v in self.variants}
        jobs = [(s, v) for s in self.seeds for v in self.variants]
        for seed, variant in progress(jobs, desc=self.name, disable=not show_progress):
            t0 = time.perf_counter()
            out = self.variants[variant](seed)
            if not isinstance(out, dict):
                raise TypeError(
                    f"{self.name}: variant {variant!r} returned {type(out).__name__}, expected a dict "
                    "of metrics"
                )
            seconds[variant] += time.perf_counter() - t0
            per_seed[variant].append({"seed": seed, **out})
        return ExperimentResult(self.name, per_seed, seconds)
