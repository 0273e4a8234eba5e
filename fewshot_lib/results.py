"""What a notebook reports: ``metrics.json`` and the claims ledger.

Every method notebook tests its paper's headline effect over several seeds and records each test as a
*claim* in ``metrics.json``::

    {"claim": "CDC keeps more diversity than plain fine-tuning", "kind": "paper", "metric": "intra_cluster_lpips",
     "extractor": "emoji-features-v1", "higher_is_better": true, "method": "cdc", "baseline": "tgan",
     "method_values": [..], "baseline_values": [..], "method_mean": .., "baseline_mean": .., "seeds": 3,
     "test": "better", "improvement": .., "margin": .., "measurable": true, "verdict": "holds", "holds": true}

**Kinds.** ``"paper"``: a paper's claim about a method. ``"sanity"``: a check of the metrics themselves
(notebook 03: "FID notices blur"). The report lists them apart.

**Measurable first.** A paper claim compares two generators; if either side's samples are not yet images,
the comparison is noise against noise and proves nothing, however large the difference. So a paper claim is
judged only when both sides beat the *image floors* — measured once per reference set by
:func:`fewshot_lib.metrics.floors.image_floors`: recognisability above that of the reference images shrunk to
8 px and re-enlarged, FID below that of uniform noise. Otherwise ``"holds": null`` and
``"verdict": "not measurable at this budget"``. A paper claim given no floor evidence is not measurable either.

**The rule for ``holds``** (one rule for the whole package, computed from the numbers, never set by hand):
let ``d`` be the method's improvement over the baseline (``method - baseline`` when higher is better,
``baseline - method`` otherwise) and ``se = sqrt(method_std² / n_m + baseline_std² / n_b)`` the standard error
of the difference of the two means over the seeds (sample std, ``ddof=1``). Then

* ``test="better"``:    the claim holds when ``d > 2·se`` — better by more than the seeds' noise;
* ``test="not_worse"``: the claim holds when ``d ≥ -2·se`` — not worse beyond the seeds' noise; but when
  ``2·se`` exceeds 10 % of ``|baseline mean|`` the seeds are too noisy for "not worse" to mean anything, and
  the verdict is ``"inconclusive"`` (``holds: null``) whatever the observed difference.

``margin = 2·se`` is stored so readers can see how close a call was, and so are the per-seed values. With one
seed on either side the seeds' noise is unknown (it is not 0), so the claim is not judged: ``"holds": null``,
``"verdict": "not judged: one seed"`` — a single run only shows a direction, which ``improvement`` keeps.
Verdicts never change a program's exit status; they are results, not errors.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

NOISE_FACTOR = 2.0


def _clean(value: Any) -> Any:
    """Make numpy / torch scalars and arrays JSON-serialisable; NaN/inf become ``None``."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):  # numpy or torch
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


KINDS = ("paper", "sanity")
NOT_WORSE_MAX_RELATIVE_MARGIN = 0.10
NOT_MEASURABLE = "not measurable at this budget"
ONE_SEED = "not judged: one seed"
# The floor metrics and how each is beaten: FID must be lower than the floor's, recognisability higher.
FLOOR_METRICS = {"fid": "lower", "recognisability": "higher"}


def beats_floors(side: dict[str, float], floors: dict[str, float]) -> dict[str, bool]:
    """Which of the floor metrics in ``floors`` (``{"fid": .., "recognisability": ..}``; other entries such as the
    extractor's name or the reference size are ignored) the side's metrics beat (``{metric: bool}``); a metric
    the side lacks does not beat its floor."""
    out = {}
    for metric, floor in floors.items():
        if metric not in FLOOR_METRICS or not isinstance(floor, (int, float)):
            continue
        value = side.get(metric)
        if value is None or not math.isfinite(float(value)):
            out[metric] = False
        elif FLOOR_METRICS[metric] == "lower":
            out[metric] = float(value) < floor
        else:
            out[metric] = float(value) > floor
    return out


def make_claim(
    claim: str,
    metric: str,
    extractor: str,
    method: str,
    baseline: str,
    method_values: Sequence[float],
    baseline_values: Sequence[float],
    higher_is_better: bool,
    test: str = "better",
    kind: str = "paper",
    floors: dict[str, float] | None = None,
    method_side: dict[str, float] | None = None,
    baseline_side: dict[str, float] | None = None,
    **extra: Any,
) -> dict:
    """One claims-ledger entry, judged by the rule in this module's docstring.

    ``floors`` with ``method_side`` / ``baseline_side`` (each ``{"fid": .., "recognisability": ..}``, means over
    the seeds) decide whether a ``kind="paper"`` claim is measurable; ``extra`` keys (e.g. ``regime="lab"``) are
    stored as given.
    """
    if test not in ("better", "not_worse"):
        raise ValueError(f"test must be 'better' or 'not_worse', got {test!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    m = np.asarray(method_values, dtype=float)
    b = np.asarray(baseline_values, dtype=float)
    if len(m) == 0 or len(b) == 0:
        raise ValueError(f"claim {claim!r}: need at least one value for method and baseline")
    n = min(len(m), len(b))
    m_std = float(m.std(ddof=1)) if len(m) > 1 else 0.0
    b_std = float(b.std(ddof=1)) if len(b) > 1 else 0.0
    se = math.sqrt(m_std**2 / len(m) + b_std**2 / len(b))
    d = (m.mean() - b.mean()) if higher_is_better else (b.mean() - m.mean())
    margin = NOISE_FACTOR * se
    entry = {
        "claim": claim,
        "kind": kind,
        "metric": metric,
        "extractor": extractor,
        "higher_is_better": bool(higher_is_better),
        "method": method,
        "baseline": baseline,
        "method_mean": float(m.mean()),
        "method_std": m_std,
        "baseline_mean": float(b.mean()),
        "baseline_std": b_std,
        "method_values": m.tolist(),
        "baseline_values": b.tolist(),
        "seeds": int(n),
        "test": test,
        "improvement": float(d),
        "margin": float(margin),
        **extra,
    }
    measurable = True
    if kind == "paper":
        if floors is None or method_side is None or baseline_side is None:
            measurable, entry["floor_check"] = False, "no floor evidence given"
        else:
            checks = {
                "method": beats_floors(method_side, floors),
                "baseline": beats_floors(baseline_side, floors),
            }
            measurable = (
                all(checks["method"].values()) and all(checks["baseline"].values()) and bool(checks["method"])
            )
            entry["floor_check"] = {
                "floors": floors,
                "method": method_side,
                "baseline": baseline_side,
                "beats": checks,
            }
    if not measurable:
        verdict, holds = NOT_MEASURABLE, None
    elif (
        min(len(m), len(b)) < 2
    ):  # no estimate of the seeds' noise: a margin of 0 would let any difference pass
        verdict, holds = ONE_SEED, None
    elif test == "better":
        holds = bool(d > margin)
        verdict = "holds" if holds else "does not hold"
    elif margin > NOT_WORSE_MAX_RELATIVE_MARGIN * abs(b.mean()):
        verdict, holds = "inconclusive", None
    else:
        holds = bool(d >= -margin)
        verdict = "holds" if holds else "does not hold"
    return {**entry, "measurable": measurable, "verdict": verdict, "holds": holds}


def format_claim(c: dict) -> str:
    """One line per claim with its per-seed values, for notebooks to print under their ledger."""
    fmt = lambda v: "[" + ", ".join(f"{x:.4g}" for x in v) + "]"  # noqa: E731
    return (
        f"[{c.get('kind', 'paper')}] {c['claim']}: {c['verdict']} — {c['method']} {fmt(c['method_values'])} vs "
        f"{c['baseline']} {fmt(c['baseline_values'])} ({c['metric']}, {c['extractor']}; "
        f"improvement {c['improvement']:.4g}, margin {c['margin']:.4g}, {c['seeds']} seed(s))"
    )


def write_metrics(
    run_dir: str | os.PathLike, metrics: dict, notebook: str, profile: str, claims: list[dict] | None = None
) -> Path:
    """Write ``run_dir/metrics.json`` (atomically) and return its path.

    ``metrics`` is any JSON-able dict of numbers/strings; name the feature extractor next to every metric
    that used one.
    """
    path = Path(run_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "notebook": notebook,
        "profile": profile,
        "metrics": _clean(metrics),
        "claims": _clean(list(claims or [])),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


SAMPLES_FILE = "samples.npz"


def write_samples(
    run_dir: str | os.PathLike, batches: Sequence[tuple[str, str, int, Any]], name: str = SAMPLES_FILE
) -> Path:
    """Write what a notebook shows as ``run_dir/samples.npz`` (atomically) and return its path.

    ``batches``: ``(method, task, seed, images)`` with ``images`` a ``[n, 3, H, W]`` tensor or array in [-1, 1]
    (``task``: an unseen class, a target style, ...). The file holds ``images`` (uint8 ``[N, H, W, 3]``) and, per
    image, ``method``, ``task`` and ``seed`` — enough for a later notebook (or a reader) to recompute any metric
    from the pictures themselves.
    """
    if not batches:
        raise ValueError("write_samples needs at least one (method, task, seed, images) batch")
    images, methods, tasks, seeds = [], [], [], []
    for method, task, seed, x in batches:
        x = np.asarray(x.detach().cpu().float() if hasattr(x, "detach") else x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{method}/{task}: images must be [n, 3, H, W], got {list(x.shape)}")
        images.append(np.clip(np.rint((x + 1) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))
        methods += [method] * len(x)
        tasks += [task] * len(x)
        seeds += [int(seed)] * len(x)
    path = Path(run_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        images=np.concatenate(images),
        method=np.array(methods),
        task=np.array(tasks),
        seed=np.array(seeds, dtype=np.int64),
    )
    os.replace(tmp, path)
    return path


def read_samples(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``samples.npz`` written by :func:`write_samples` (no pickled objects are loaded)."""
    with np.load(Path(path), allow_pickle=False) as f:
        missing = {"images", "method", "task", "seed"} - set(f.files)
        if missing:
            raise ValueError(
                f"{path} lacks {sorted(missing)}; was it written by fewshot_lib.results.write_samples?"
            )
        return {k: f[k] for k in ("images", "method", "task", "seed")}


def read_metrics(path: str | os.PathLike) -> dict:
    """Read a ``metrics.json`` back (raises ``ValueError`` naming the file if it is malformed)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    for key in ("notebook", "profile", "metrics", "claims"):
        if key not in data:
            raise ValueError(
                f"{path} lacks the key {key!r}; was it written by fewshot_lib.results.write_metrics?"
            )
    return data
