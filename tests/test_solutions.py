"""Every chapter's exercises have a hint and a worked solution (notebooks/solutions/NN_<chapter>_solutions.ipynb).

`make test` executes the solution notebooks at the smoke profile (nbval collects them with the chapters); this
file checks that they cover every exercise of their chapter, in order, each with a hint, code that checks what it
shows, and a reading of the output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
EXERCISES = re.compile(r"^#+ (?:\d+\. )?Exercises\s*$", re.M)


def exercise_numbers(chapter: dict) -> list[int]:
    """The numbers of the chapter's exercise list (the items after its "Exercises" heading)."""
    for cell in chapter["cells"]:
        src = "".join(cell["source"])
        heading = EXERCISES.search(src) if cell["cell_type"] == "markdown" else None
        if heading:
            return [int(n) for n in re.findall(r"^(\d+)\. ", src[heading.end() :], re.M)]
    return []


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_exercise_has_a_hint_and_a_checked_solution(chapter):
    numbers = exercise_numbers(json.loads(chapter.read_text()))
    assert numbers == list(range(1, len(numbers) + 1)) and numbers, f"{chapter.name}: no numbered exercises"
    path = NOTEBOOKS / "solutions" / f"{chapter.stem}_solutions.ipynb"
    assert path.is_file(), f"{chapter.name} has no solutions notebook {path.name}"
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# Solutions")
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), "no parameters cell"
    starts = [
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "markdown" and re.match(r"## Exercise \d+\b", "".join(c["source"]))
    ]
    found = [int(re.match(r"## Exercise (\d+)", "".join(cells[i]["source"])).group(1)) for i in starts]
    assert found == numbers, f"{path.name} solves exercises {found}, the chapter has {numbers}"
    for a, b in zip(starts, starts[1:] + [len(cells)]):
        part, head = cells[a:b], "".join(cells[a]["source"])
        n = found[starts.index(a)]
        assert "<summary>Hint</summary>" in head, f"{path.name}: exercise {n} has no hint"
        code = [c for c in part if c["cell_type"] == "code"]
        assert code and any("assert " in "".join(c["source"]) for c in code), f"exercise {n}: no checked code"
        assert all(c.get("outputs") is not None and c.get("execution_count") for c in code), (
            f"{path.name}: exercise {n} is stored unexecuted"
        )
        assert any(
            c["cell_type"] == "markdown" and "".join(c["source"]).startswith("**What the output shows.**")
            for c in part
        ), f"{path.name}: exercise {n} does not say what its output shows"
