"""Every notebook follows the house anatomy and is stored in a state readers can use."""

import ast
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:w[o]rk|r[o]ot|home|Users|tmp)/[\w.]")
REQUIRED_PARAMETERS = {"profile", "seed", "device", "run_dir"}


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name.startswith("00_")


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def notebook(request):
    return request.param, json.loads(request.param.read_text())


def test_kernel_and_size(notebook):
    path, nb = notebook
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert path.stat().st_size < 2 * 2**20, f"{path.name} is over 2 MB; use smaller figures"


def test_every_cell_has_a_unique_id(notebook):
    # nbformat ≥ 4.5 requires cell ids (a missing one is a warning today, "a hard error in future versions");
    # a cell added by hand to the JSON has none until something normalises the notebook
    path, nb = notebook
    if (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5):
        ids = [c.get("id") for c in nb["cells"]]
        assert None not in ids, f"{path.name}: cell {ids.index(None)} has no id"
        assert len(set(ids)) == len(ids), f"{path.name}: cell ids repeat"


def test_anatomy_title_runtime_table_parameters_metrics(notebook):
    path, nb = notebook
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown" and first.startswith("# ")
    assert all(p in first for p in ("smoke", "lab", "full")), "runtime table per profile missing"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged `parameters`"
    # A stored papermill "injected-parameters" cell is re-executed by every in-place run but replaced by the
    # runner's, so the committed outputs would come from other settings than `make run` uses.
    assert not any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"]), (
        "remove the injected-parameters cell a papermill -p run left behind"
    )
    tree = ast.parse("".join(tagged[0]["source"]))
    names = set()
    for node in tree.body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), "parameters cell: assignments only"
        value = node.value
        assert value is not None and isinstance(
            ast.literal_eval(value), (int, float, str, bool, type(None), list, tuple, dict)
        ), "literals only"
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names |= {t.id for t in targets}
    assert REQUIRED_PARAMETERS <= names
    import papermill as pm  # papermill's own parser must see every parameter (quotes in comments break it)

    assert set(pm.inspect_notebook(str(path))) == names, "papermill cannot parse the parameters cell"
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    # metrics.json: written directly, or by an experiment result (fewshot_lib.experiments, which calls write_metrics)
    assert "write_metrics(" in code or re.search(r"\.write\(\s*run_dir", code)
    assert "tqdm.notebook" not in code and ".cuda()" not in code


def test_stored_with_outputs_and_no_absolute_paths(notebook):
    path, nb = notebook
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code_cells), (
        f"{path.name}: run it (make notebooks) before committing"
    )
    assert any(c.get("outputs") for c in code_cells)
    for i, cell in enumerate(nb["cells"]):
        texts = ["".join(cell["source"])]
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{path.name} cell {i} stored an error"
            texts.append("".join(out.get("text", "")))
            data = out.get("data", {})
            assert "application/vnd.jupyter.widget-view+json" not in data or "text/plain" in data
            texts += ["".join(v) for k, v in data.items() if k.startswith("text/")]
        for text in texts:
            assert not ABSOLUTE_PATH.search(text), f"{path.name} cell {i} shows an absolute path"


def test_every_widget_is_preceded_by_a_picture(notebook):
    """An explorer shows a PNG of its default state before its widget, so papermill, nbval, GitHub and the report
    (none of which run widgets) still show what it looks like."""
    path, nb = notebook
    for i, cell in enumerate(nb["cells"]):
        seen_image = False
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data and "image/png" not in data:
                assert seen_image, (
                    f"{path.name} cell {i}: a widget output without a PNG of its state before it"
                )
            seen_image = seen_image or "image/png" in data
