import os

import pytest
import torch

# Unit tests use tiny models, where intra-op threads cost more than they give (and on a shared 2-core
# machine they fight each other): one thread. Notebooks under nbval run in their own kernels.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def emoji():
    from fewshot_lib.data.emoji import load_emoji

    return load_emoji()
