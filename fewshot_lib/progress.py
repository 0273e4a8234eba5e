"""Progress bars that behave in a terminal, in Jupyter and in papermill batch runs.

Text ``tqdm`` is the default everywhere: it renders in terminals and notebooks alike, and in a stored
(papermill/nbval) notebook it stays readable text, where a widget bar would be stored as an unrenderable
blob. ``FEWSHOT_PROGRESS=widget`` switches to ``tqdm.auto`` widgets for interactive use;
``FEWSHOT_PROGRESS=off`` silences bars; the batch runner sets ``FEWSHOT_PROGRESS=plain`` (rare refreshes).
"""

from __future__ import annotations

import os
from typing import Iterable


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str | None = None, **kwargs):
    """A tqdm progress bar suited to where the code runs (see module docstring)."""
    mode = os.environ.get("FEWSHOT_PROGRESS", "auto").lower()
    if mode == "widget":
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm

        kwargs.setdefault("mininterval", 10.0 if mode == "plain" else 2.0)
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("dynamic_ncols", False)
        kwargs["disable"] = kwargs.get("disable", False) or mode == "off"
    return tqdm(iterable, total=total, desc=desc, **kwargs)
