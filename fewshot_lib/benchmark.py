"""Every method on the same tasks, one protocol, one extractor: the evaluation behind notebook 09.

Two tasks, each a fixed set of real images and a rule that draws the shots from a seed:

* :class:`UnseenClassTask` — *generate an unseen class from k shots*: notebook 06's unseen classes (a class is one
  emoji subcategory in one style, split by :func:`fewshot_lib.methods.lofgan.emoji_episode_classes`), each
  split into 10 conditioning images and the held-out rest; judged by
  :class:`~fewshot_lib.metrics.unseen_class.UnseenClassJudge` (class consistency, near-copies,
  recognisability, per-class LPIPS diversity, FID) plus the pooled KID and precision/recall against the held-out
  images. Notebook 06 evaluates its shipped and lab runs through the same object.
* :class:`LSOTasks` — the same task on the episodes LSO was run on: LSO fine-tunes a generator per episode
  (``scripts/run_lso_tasks.py`` ships their samples), so LoFGAN, global fusion and the floor are compared with it
  on *those* shots, judged by the same :class:`UnseenClassTask`.
* :class:`ShotSetTask` — *learn a new domain from 10 shots*: the shots drawn from a target set with the rule of
  notebook 04 and ``scripts/train_adaptation.py`` (sorted indices of ``default_rng(seed).choice``), the
  generator's samples compared with the whole target set (:func:`~fewshot_lib.metrics.protocols.evaluate_against_set`:
  FID, KID, precision/recall, LPIPS diversity, intra-cluster LPIPS), the emoji network's target-style share,
  recognisability and the near-copy share of :func:`~fewshot_lib.metrics.generator.shot_copy_metrics` (on the same
  samples).

What ships is found through :mod:`fewshot_lib.artifacts` (never by path): :func:`shipped_adaptations` for
``<method>_<style>_shots<seed>`` exports, :func:`fewshot_lib.methods.lofgan.shipped_exports` for LoFGAN and
global fusion. :func:`table_row` turns an :class:`~fewshot_lib.experiments.ExperimentResult` into the rows of
:mod:`fewshot_lib.benchmark_tables` (mean ± sample std over seeds, every seed's value kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from . import artifacts
from .config import data_dir
from .data.emoji import to_tensor
from .data.fewshot import draw_shot_indices
from .experiments import ExperimentResult, summarize
from .metrics.fid import kid
from .metrics.floors import image_floors
from .metrics.generator import shot_copy_metrics
from .metrics.pr import precision_recall
from .metrics.protocols import conditioning_split, evaluate_against_set
from .metrics.recognisability import recognisability
from .metrics.result import resolve_extractor
from .metrics.style import style_share
from .metrics.unseen_class import UnseenClassJudge, class_consistency, near_copy_fraction, sample_episodes
from .models.helpers import generate as generate_images

__all__ = [
    "UNSEEN_COLUMNS",
    "SHOT_SET_COLUMNS",
    "ADAPTATION_METHODS",
    "UnseenClassTask",
    "LSOTasks",
    "choose_magnitude",
    "choose_lso_magnitude",
    "ShotSetTask",
    "draw_shot_indices",
    "shipped_adaptations",
    "training_cpu_minutes",
    "table_row",
    "placeholder_row",
]

#: The columns of each task (``fewshot_lib.benchmark_tables.COLUMN_LABELS`` names them).
UNSEEN_COLUMNS = (
    "fid",
    "kid",
    "precision",
    "recall",
    "lpips_diversity",
    "class_consistency",
    "recognisability",
    "near_copies",
    "train_cpu_minutes",
    "parameters",
)
SHOT_SET_COLUMNS = (
    "fid",
    "kid",
    "precision",
    "recall",
    "lpips_diversity",
    "intra_cluster_lpips",
    "style_share",
    "recognisability",
    "near_copies",
    "train_cpu_minutes",
    "parameters",
)
#: The adaptation methods ``scripts/train_adaptation.py`` ships, in table order.
ADAPTATION_METHODS = ("tgan", "freezed", "cdc")


# ---------------------------------------------------------------------------------------------------------
# What a shipped file cost
# ---------------------------------------------------------------------------------------------------------


def training_cpu_minutes(manifest: dict) -> float | None:
    """Process CPU minutes of every training sitting (``training_sessions[*].cpu_s``); ``None`` when a sitting
    did not record it (older manifests): a partial sum would understate the cost."""
    sessions = manifest.get("training_sessions") or []
    if not sessions or any(s.get("cpu_s") is None for s in sessions):
        return None
    return sum(float(s["cpu_s"]) for s in sessions) / 60


# ---------------------------------------------------------------------------------------------------------
# Task 1: an unseen class from k shots
# ---------------------------------------------------------------------------------------------------------


@dataclass
class UnseenClassTask:
    """Notebook 06's unseen-class protocol, set up once: the judge (held-out features, the real manifold's k-NN
    radii), the image floors and the ceiling of real held-out images.

    ``conditioning`` / ``held_out``: ``{class: [n, 3, H, W]}``; ``manifold``: features of every real image of the
    styles involved (the recognisability test's real set).
    """

    conditioning: dict[str, torch.Tensor]
    held_out: dict[str, torch.Tensor]
    judge: UnseenClassJudge
    floors: dict[str, Any]
    ceiling: dict[str, float]
    k: int = 3

    @property
    def extractor(self):
        return self.judge.ext

    @property
    def manifold(self) -> torch.Tensor:
        return self.judge.manifold

    @classmethod
    def from_split(
        cls,
        conditioning: dict[str, torch.Tensor],
        held_out: dict[str, torch.Tensor],
        manifold_images: torch.Tensor,
        k: int = 3,
        extractor="emoji",
        device=None,
    ) -> "UnseenClassTask":
        """The task on given classes; ``manifold_images [M, 3, H, W]``: every real image of their styles."""
        ext = resolve_extractor(extractor, device)
        manifold = ext.features(manifold_images, show_progress=False)  # [M, D]
        judge = UnseenClassJudge(held_out, manifold=manifold, extractor=ext)
        real = torch.cat(list(held_out.values()))
        floors = image_floors(real, ext, manifold=manifold, manifold_radii=judge.radii)  # noise FID; 8 px
        ceiling = {
            "class_consistency": class_consistency(held_out, ext).value,
            "recognisability": recognisability(manifold, real, extractor=ext, real_radii=judge.radii).value,
        }
        return cls(conditioning, held_out, judge, floors, ceiling, k)

    @classmethod
    def emoji(
        cls,
        k: int = 3,
        n_classes: int = 0,
        styles: Sequence[str] = ("noto", "twemoji"),
        extractor="emoji",
        device=None,
    ) -> "UnseenClassTask":
        """Notebook 06's unseen classes of the embedded emoji (``n_classes``: the first few only; 0 = all)."""
        from .data.emoji import load_emoji
        from .methods.lofgan import emoji_episode_classes

        data = load_emoji(size=32)
        _, unseen = emoji_episode_classes(data, styles=tuple(styles), min_count=10)
        conditioning, held_out = conditioning_split(unseen, n_condition=10, seed=0)
        if n_classes:
            keep = list(conditioning)[:n_classes]
            conditioning = {c: conditioning[c] for c in keep}
            held_out = {c: held_out[c] for c in keep}
        manifold_images = data.select(styles=list(styles)).tensors()
        return cls.from_split(conditioning, held_out, manifold_images, k, extractor, device)

    def episodes(
        self, generate: Callable[[torch.Tensor], torch.Tensor], seed: int, n_per_class: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(fakes {class: [n, 3, H, W]}, shots {class: [n, k, 3, H, W]})``: seed ``seed``'s episodes."""
        return sample_episodes(generate, self.conditioning, k=self.k, n_per_class=n_per_class, seed=seed)

    def evaluate(
        self,
        generate: Callable[[torch.Tensor], torch.Tensor],
        seed: int,
        n_per_class: int,
        pooled: bool = False,
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """The judge's values for ``generate`` (``shots [B, k, 3, H, W] → [B, 3, H, W]``) on seed ``seed``'s
        episodes, and the fakes; ``pooled`` adds KID and precision/recall against the held-out images."""
        fakes, shots = self.episodes(generate, seed, n_per_class)
        return self.judge_samples(fakes, shots, seed, pooled), fakes

    def judge_samples(
        self,
        fakes: dict[str, torch.Tensor],
        shots: dict[str, torch.Tensor],
        seed: int = 0,
        pooled: bool = True,
    ) -> dict[str, float]:
        """The judge's values for samples made elsewhere (``fakes {class: [n, 3, H, W]}`` of some of this task's
        classes, each beside its episode's ``shots {class: [n, k, 3, H, W]}``), e.g. on :class:`LSOTasks`'
        episodes; ``pooled`` adds KID and precision/recall."""
        values = self.judge.values(fakes, shots)
        if pooled:
            values.update(self.pooled(fakes, seed))
        return values

    def pooled(self, fakes: dict[str, torch.Tensor], seed: int = 0) -> dict[str, float]:
        """KID and precision/recall of all ``fakes`` against all held-out images of their classes."""
        ext = self.extractor
        f_real = torch.cat([self.judge.real_features[c] for c in fakes])
        f_fake = ext.features(torch.cat(list(fakes.values())), show_progress=False)
        pr = precision_recall(f_real, f_fake, ext)
        return {
            "kid": kid(f_real, f_fake, ext, seed=seed).value,
            "precision": pr["precision"].value,
            "recall": pr["recall"].value,
        }

    def copy_shots(self, seed: int, n_per_class: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """The floor: "generate" by returning the episode's first shot."""
        return self.evaluate(lambda shots: shots[:, 0], seed, n_per_class, pooled=True)

    def real_held_out(self, seed: int, n_per_class: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """The ceiling: up to ``n_per_class`` held-out images per class (a seeded draw), each judged against k
        shots drawn from its class's pool. FID/KID/precision/recall are left out: these images *are* the
        reference set, so those would measure it against itself."""
        g = torch.Generator().manual_seed(seed)
        reals, shots = {}, {}
        for c, x in self.held_out.items():
            pick = torch.randperm(len(x), generator=g)[:n_per_class]
            pool = self.conditioning[c]
            reals[c] = x[pick]
            shots[c] = pool[torch.stack([torch.randperm(len(pool), generator=g)[: self.k] for _ in pick])]
        values = self.judge.values(reals, shots)
        values.pop("fid")
        return values, reals


# ---------------------------------------------------------------------------------------------------------
# Task 1 on LSO's episodes: one generator per episode, so every method gets those shots
# ---------------------------------------------------------------------------------------------------------


def choose_magnitude(table: dict[float, dict[str, float]], bar: float = 0.75) -> float:
    """LSO's sampling magnitude from a validation table ``{s: {"class_consistency", "near_copies"}}``: the
    largest s (the most diverse) that meets the quality bar (consistency ≥ ``bar``, near-copies < 1/3); if none
    does, the most class-consistent s (ties: the smaller)."""
    ok = [s for s, r in table.items() if r["class_consistency"] >= bar and r["near_copies"] < 1 / 3]
    return max(ok) if ok else max(table, key=lambda s: (round(table[s]["class_consistency"], 6), -s))


def choose_lso_magnitude(task_sets: Sequence["LSOTasks"], extractor="emoji") -> tuple[float, dict]:
    """``(s, table)``: :func:`choose_magnitude` on the validation tables of several seeds' tasks, averaged over
    the seeds (every seed has the same validation classes and tasks)."""
    tables = [t.validation_table(extractor) for t in task_sets]
    table = {s: {m: sum(t[s][m] for t in tables) / len(tables) for m in tables[0][s]} for s in tables[0]}
    return choose_magnitude(table), table


@dataclass
class LSOTasks:
    """The tasks ``scripts/run_lso_tasks.py --seed <seed>`` ran, read from its shipped, checksummed samples.

    A task is one unseen class × one episode of k shots; per task the file holds the shots and the samples of
    LSO (at every sampling magnitude), inversion + plain fine-tune and inversion only. Validation tasks (classes
    disjoint from the evaluation classes) only choose the magnitude (:meth:`validation_table`).
    """

    arrays: dict[str, Any]
    manifest: dict[str, Any]

    @classmethod
    def shipped(cls, seed: int, folder=None) -> "LSOTasks | None":
        """The shipped tasks of ``seed`` (``None``: not shipped); a file that does not match its manifest's
        sha256 raises ``ValueError`` (:func:`fewshot_lib.methods.lso.shipped_task_samples`)."""
        from .methods.lso import shipped_task_samples

        found = shipped_task_samples(seed, folder)
        return None if found is None else cls(*found)

    @staticmethod
    def shipped_seeds(folder=None) -> list[int]:
        """The seeds whose samples ship (``data/lso/lso_samples_seed<seed>.npz``), complete or not."""
        folder = Path(folder) if folder is not None else data_dir() / "lso"
        return sorted(
            int(p.stem.removeprefix("lso_samples_seed")) for p in folder.glob("lso_samples_seed*.npz")
        )

    @property
    def seed(self) -> int:
        return int(self.manifest["seed"])

    @property
    def complete(self) -> bool:
        """Every planned task ran (a seed is shipped in sittings; a partial one is continued, not compared)."""
        return self.manifest.get("tasks_done") == self.manifest.get("tasks_planned")

    @cached_property
    def stale(self) -> bool:
        """Made from another export of the conditional source than the one shipped now (the source trained on
        after these tasks ran): their samples no longer describe what the package ships. Read once per object
        (07 and 09 ask for every seed several times)."""
        return artifacts.manifest(self.manifest["source"]).get("sha256") != self.manifest.get("source_sha256")

    @property
    def progress(self) -> str:
        return f"{self.manifest.get('tasks_done')} of {self.manifest.get('tasks_planned')} tasks"

    def tasks(
        self, validation: bool = False, classes: Sequence[str] | None = None, n_episodes: int | None = None
    ) -> list[tuple[str, int, torch.Tensor]]:
        """``[(class, episode, shots [k, 3, S, S] in [-1, 1])]`` of the evaluation (or validation) tasks, keeping
        ``classes`` and episodes below ``n_episodes`` when given."""
        a = self.arrays
        return [
            (str(c), int(e), to_tensor(a["shots"][t]))
            for t, (c, e, v) in enumerate(zip(a["task_class"], a["task_episode"], a["task_validation"]))
            if bool(v) == validation
            and (classes is None or c in classes)
            and (n_episodes is None or e < n_episodes)
        ]

    def method_samples(
        self, method: str, cls: str, episode: int, magnitude: float | None = None
    ) -> torch.Tensor:
        """``[n, 3, S, S]`` samples of ``method`` (``lso``, ``inversion_finetune``, ``inversion_only``) on one
        task; LSO's at ``magnitude``."""
        a = self.arrays
        rows = (a["method"] == method) & (a["task"] == cls) & (a["episode"] == episode)
        if magnitude is not None:
            rows &= a["magnitude"] == magnitude
        if not rows.any():
            raise KeyError(f"no {method} samples for {cls} episode {episode} at magnitude {magnitude}")
        return to_tensor(a["images"][rows])

    def validation_table(self, extractor="emoji") -> dict[float, dict[str, float]]:
        """``{s: {"class_consistency", "near_copies"}}`` of LSO's samples on the validation tasks, per sampling
        magnitude s: what :func:`choose_magnitude` reads."""
        ext = resolve_extractor(extractor)
        magnitudes = sorted({float(m) for m in self.arrays["magnitude"][self.arrays["method"] == "lso"]})
        table = {}
        for s in magnitudes:
            fakes: dict[str, list] = {}
            shots: dict[str, list] = {}
            for cls, ep, sh in self.tasks(validation=True):
                x = self.method_samples("lso", cls, ep, s)
                fakes.setdefault(cls, []).append(x)
                shots.setdefault(cls, []).append(sh[None].expand(len(x), -1, -1, -1, -1))
            fk = {c: torch.cat(v) for c, v in fakes.items()}
            sh_ = {c: torch.cat(v) for c, v in shots.items()}
            table[s] = {
                "class_consistency": class_consistency(fk, ext).value,
                "near_copies": near_copy_fraction(fk, sh_, extractor=ext).value,
            }
        return table

    def samples(
        self,
        magnitude: float,
        per_task: int,
        generators: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
        classes: Sequence[str] | None = None,
        n_episodes: int | None = None,
    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """Every method on the evaluation tasks: ``(fakes {method: {class: [n, 3, S, S]}}, shots {class: [n, k, 3,
        S, S]})`` with ``per_task`` samples per task and method — LSO at ``magnitude``, inversion + fine-tune,
        inversion only, each of ``generators`` (``shots [B, k, 3, S, S] → [B, 3, S, S]``, e.g.
        :func:`fewshot_lib.methods.lofgan.episode_generate_fn`) on the task's own shots, and ``copy_shots`` (the
        floor: the shots themselves)."""
        fakes: dict[str, dict[str, list]] = {}
        shots: dict[str, list] = {}
        for cls, ep, sh in self.tasks(classes=classes, n_episodes=n_episodes):
            batch = sh[None].expand(per_task, -1, -1, -1, -1)
            out = {
                "lso": self.method_samples("lso", cls, ep, magnitude)[:per_task],
                "inversion_finetune": self.method_samples("inversion_finetune", cls, ep)[:per_task],
                "inversion_only": self.method_samples("inversion_only", cls, ep)[:per_task],
                **{name: fn(batch).cpu() for name, fn in (generators or {}).items()},
                "copy_shots": sh[torch.arange(per_task) % len(sh)],
            }
            for m, x in out.items():
                fakes.setdefault(m, {}).setdefault(cls, []).append(x)
            shots.setdefault(cls, []).append(batch)
        return (
            {m: {c: torch.cat(v) for c, v in d.items()} for m, d in fakes.items()},
            {c: torch.cat(v) for c, v in shots.items()},
        )


# ---------------------------------------------------------------------------------------------------------
# Task 2: a new domain from k shots (adaptation from the source, or from scratch)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ShotSetTask:
    """``shots [k, 3, H, W]`` of a target set ``target [M, 3, H, W]`` (whose style the emoji network's style head
    knows as ``style``); the target's features are computed once.

    ``describe``: what the task is, e.g. ``"noto → fluent_3d, 10 shots (seed 0)"``.
    """

    name: str
    style: str
    shots: torch.Tensor
    target: torch.Tensor
    shots_seed: int
    shot_indices: list[int] = field(default_factory=list)
    extractor: Any = "emoji"
    device: Any = None

    def __post_init__(self) -> None:
        self.ext = resolve_extractor(self.extractor, self.device)
        self.target_features = self.ext.features(self.target, show_progress=False)  # [M, D]

    @classmethod
    def style_target(cls, style: str, n_shots: int = 10, shots_seed: int = 0, extractor="emoji", device=None):
        """Adaptation's task: ``n_shots`` of every emoji of ``style``; FID against the whole style (as 04)."""
        from .data.emoji import load_emoji

        target = load_emoji().select(styles=style).tensors()
        idx = draw_shot_indices(len(target), n_shots, shots_seed)
        name = f"noto → {style}, {n_shots} shots (seed {shots_seed})"
        return cls(name, style, target[idx], target, shots_seed, idx, extractor, device)

    @classmethod
    def category(
        cls,
        style: str,
        category: str,
        n_shots: int = 10,
        shots_seed: int = 0,
        extractor="emoji",
        device=None,
    ):
        """Notebook 05's from-scratch task (``methods.mixdl.category_task``): shots of one category, FID against
        the rest of it."""
        from .methods.mixdl import category_task

        shots, reference = category_task(style, category, n_shots, shots_seed)
        name = f"{style} {category}, {n_shots} shots (seed {shots_seed})"
        return cls(name, style, shots, reference, shots_seed, [], extractor, device)

    @torch.no_grad()
    def samples(self, generator: nn.Module, n: int, seed: int) -> torch.Tensor:
        """``n`` images of seeded latents ``[n, 3, H, W]`` (fresh noise maps, as notebook 04 evaluates)."""
        dev = next(generator.parameters()).device
        torch.manual_seed(seed)  # the noise maps
        z = torch.randn(n, generator.style_dim, generator=torch.Generator().manual_seed(10_000 + seed))
        return torch.cat([generate_images(generator, zb.to(dev)).cpu() for zb in z.split(128)])

    def evaluate(self, generator: nn.Module, n: int, seed: int) -> tuple[dict[str, float], torch.Tensor]:
        """Every column of :data:`SHOT_SET_COLUMNS` but the costs, and the samples."""
        fake = self.samples(generator, n, seed)
        # [n, P]: one pass of the samples through the network for every LPIPS-style column and the near-copies
        embedding = self.ext.distance_embedding(fake, show_progress=False)
        res = evaluate_against_set(
            fake,
            self.target_features,
            train=self.shots,
            extractor=self.ext,
            metrics=("fid", "kid", "precision_recall", "pairwise_lpips", "intra_cluster_lpips"),
            seed=seed,
            fake_embeddings=embedding,
        )
        copies = shot_copy_metrics(fake, self.shots, self.ext, fake_embeddings=embedding)  # no second draw
        values = {
            "fid": res["fid"].value,
            "kid": res["kid"].value,
            "precision": res["precision"].value,
            "recall": res["recall"].value,
            "lpips_diversity": res["pairwise_lpips"].value,
            "intra_cluster_lpips": res["intra_cluster_lpips"].value,
            "style_share": style_share(fake, self.style, self.ext).value,
            "recognisability": recognisability(self.target_features, fake, extractor=self.ext).value,
            "near_copies": copies["copy_fraction"],  # a quarter of the gap between two shots (as 05 and 06)
        }
        return values, fake


def shipped_adaptations(
    style: str,
    methods: Sequence[str] = ADAPTATION_METHODS,
    min_steps: int = 0,
    n_shots: int | None = None,
) -> dict[str, dict[int, str]]:
    """``{method: {shots_seed: name}}`` of the ``<method>_<style>_shots<seed>`` exports of
    ``scripts/train_adaptation.py`` that ship now (every method is a key; an empty dict: none shipped), keeping
    those trained at least ``min_steps`` iterations on ``n_shots`` shots (``None``: any number). A run still in
    progress ships between sessions so that training continues from it; comparing it with finished ones would
    confound method and training length, so notebooks 04 and 09 pass their ``shipped_min_steps``."""
    found: dict[str, dict[int, str]] = {m: {} for m in methods}
    for name in artifacts.names():
        adapted = artifacts.parse_adaptation(name)
        if not (adapted and adapted[0] in found and adapted[1] == style):
            continue
        if min_steps or n_shots is not None:
            man = artifacts.manifest(name)
            if man.get("steps", 0) < min_steps:
                continue
            if n_shots is not None and man.get("task", {}).get("n_shots") != n_shots:
                continue
        found[adapted[0]][adapted[2]] = name
    return {m: dict(sorted(v.items())) for m, v in found.items()}


# ---------------------------------------------------------------------------------------------------------
# Rows of the tables
# ---------------------------------------------------------------------------------------------------------


def _cell(values: Sequence[float]) -> dict[str, Any] | None:
    s = summarize(values)
    return {"mean": s.mean, "std": s.std, "n": s.n, "per_seed": s.values} if s.n else None


def table_row(
    result: ExperimentResult,
    variant: str,
    columns: Sequence[str],
    label: str,
    status: str = "measured",
    note: str = "",
) -> dict[str, Any]:
    """One row of :mod:`fewshot_lib.benchmark_tables` from the per-seed values of ``variant`` (a seed whose dict
    lacks a column is left out of that cell; the row's ``seeds`` are those with any value)."""
    rows = [r for r in result.per_seed.get(variant, []) if len(r) > 1]
    out: dict[str, Any] = {
        "method": variant,
        "label": label,
        "status": status,
        "note": note,
        "seeds": [r["seed"] for r in rows],
    }
    for column in columns:
        cell = _cell([r[column] for r in rows if r.get(column) is not None])
        if cell is not None:
            out[column] = cell
    return out


def placeholder_row(method: str, label: str, note: str, status: str = "not shipped yet") -> dict[str, Any]:
    """A row that says why it has no numbers (never zeros)."""
    return {"method": method, "label": label, "status": status, "note": note, "seeds": []}
