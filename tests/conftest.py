import importlib.util
from pathlib import Path

import pytest
import torch

# Unit tests use tiny models, where intra-op threads cost more than they give (and on a shared 2-core
# machine they fight each other): one thread. Notebooks under nbval run in their own kernels.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def emoji():
    from fewshot_lib.data.emoji import load_emoji

    return load_emoji()


@pytest.fixture(scope="session")
def load_script():
    """``load_script("train_source_model")`` imports ``scripts/train_source_model.py`` (the scripts are not a
    package) so that tests can call their functions and ``main(argv)``."""
    scripts = Path(__file__).resolve().parent.parent / "scripts"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, scripts / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def write_notebook(path: Path, params_src: str, body_src: str) -> None:
    """A two-cell notebook for runner tests: a ``parameters``-tagged cell and a body cell."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell(params_src)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell(body_src)]
    nbformat.write(nb, path)
