import os

import pytest
import torch

# Tests are small; two intra-op threads is what CI has.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def emoji():
    from fewshot_lib.data.emoji import load_emoji

    return load_emoji()
