"""What a notebook reports: ``metrics.json`` and the claims ledger.

Every method notebook tests its paper's headline effect over several seeds and records each test as a
*claim* in ``metrics.json``::

    {"claim": "CDC keeps more diversity than plain fine-tuning", "metric": "intra_cluster_lpips",
     "extractor": "emoji-features-v1", "higher_is_better": true, "method": "cdc", "baseline": "tgan",
     "method_mean": .., "method_std": .., "baseline_mean": .., "baseline_std": .., "seeds": 3,
     "test": "better", "margin": .., "holds": true}

**The rule for ``holds``** (one rule for the whole package, computed from the numbers, never set by hand):
let ``d`` be the method's improvement over the baseline (``method - baseline`` when higher is better,
``baseline - method`` otherwise) and ``se = sqrt(method_std² / n + baseline_std² / n)`` the standard error of
the difference of the two means over ``n`` seeds (sample std, ``ddof=1``). Then

* ``test="better"``:    the claim holds when ``d > 2·se`` — better by more than the seeds' noise;
* ``test="not_worse"``: the claim holds when ``d ≥ -2·se`` — not worse beyond the seeds' noise.

``margin = 2·se`` is stored so readers can see how close a call was. With one seed the std is unknown
(``se = 0``): a single run can only show a direction, and the ledger says so (``seeds: 1``).
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


def make_claim(claim: str, metric: str, extractor: str, method: str, baseline: str,
               method_values: Sequence[float], baseline_values: Sequence[float], higher_is_better: bool,
               test: str = "better") -> dict:
    """One claims-ledger entry, with ``holds`` computed by the rule in this module's docstring."""
    if test not in ("better", "not_worse"):
        raise ValueError(f"test must be 'better' or 'not_worse', got {test!r}")
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
    holds = bool(d > margin) if test == "better" else bool(d >= -margin)
    return {
        "claim": claim, "metric": metric, "extractor": extractor, "higher_is_better": bool(higher_is_better),
        "method": method, "baseline": baseline,
        "method_mean": float(m.mean()), "method_std": m_std,
        "baseline_mean": float(b.mean()), "baseline_std": b_std,
        "method_values": m.tolist(), "baseline_values": b.tolist(),
        "seeds": int(n), "test": test, "improvement": float(d), "margin": float(margin), "holds": holds,
    }


def write_metrics(run_dir: str | os.PathLike, metrics: dict, notebook: str, profile: str,
                  claims: list[dict] | None = None) -> Path:
    """Write ``run_dir/metrics.json`` (atomically) and return its path.

    ``metrics`` is any JSON-able dict of numbers/strings; name the feature extractor next to every metric
    that used one.
    """
    path = Path(run_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"notebook": notebook, "profile": profile, "metrics": _clean(metrics),
               "claims": _clean(list(claims or []))}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_metrics(path: str | os.PathLike) -> dict:
    """Read a ``metrics.json`` back (raises ``ValueError`` naming the file if it is malformed)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    for key in ("notebook", "profile", "metrics", "claims"):
        if key not in data:
            raise ValueError(f"{path} lacks the key {key!r}; was it written by fewshot_lib.results.write_metrics?")
    return data
