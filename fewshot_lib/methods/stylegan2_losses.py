"""Moved to :mod:`fewshot_lib.stylegan2_losses` (the training layer, beside ``train.py``).

Kept so that ``from fewshot_lib.methods import stylegan2_losses as L`` (notebook 02) keeps working.
"""

from ..stylegan2_losses import *  # noqa: F401,F403
from ..stylegan2_losses import __all__  # noqa: F401
