"""The README's claims table is generated from docs/results_lab.json (scripts/update_readme_tables.py): it must
say exactly what that file holds, and the script must take new lab runs in and refuse other profiles."""

from __future__ import annotations

import json

import pytest


def test_readme_claims_table_matches_the_committed_results(load_script):
    script = load_script("update_readme_tables")
    readme = script.README.read_text()
    results = json.loads(script.RESULTS.read_text())
    assert script.updated_readme(readme, results) == readme, (
        "README.md's claims table differs from docs/results_lab.json: run python scripts/update_readme_tables.py"
    )
    a, b = script.readme_block(readme)
    n_paper = sum(
        c.get("kind", "paper") == "paper" for e in results["notebooks"].values() for c in e["claims"]
    )
    assert b - a > n_paper >= 1  # every paper claim has its row


def _lab_run(folder, notebook, verdict, profile="lab"):
    folder.mkdir(parents=True)
    claim = {
        "claim": f"{notebook} beats its baseline",
        "kind": "paper",
        "metric": "fid",
        "extractor": "emoji-features-v1",
        "method": "new",
        "baseline": "old",
        "method_mean": 40.0,
        "method_std": 2.0,
        "baseline_mean": 50.0,
        "baseline_std": 3.0,
        "seeds": 3,
        "measurable": True,
        "verdict": verdict,
    }
    metrics = {"notebook": notebook, "profile": profile, "metrics": {}, "claims": [claim]}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_collect_replaces_a_notebooks_claims_and_check_notices_a_stale_readme(tmp_path, load_script):
    script = load_script("update_readme_tables")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{script.BEGIN}\n{script.END}\n\nafter\n")
    results = tmp_path / "results.json"
    first = _lab_run(tmp_path / "a", "04_cdc", "holds")
    assert script.main(["--collect", str(first), "--results", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert (
        "| 04_cdc | 04_cdc beats its baseline | **holds** (fid: new 40 ± 2 vs old 50 ± 3; 3 seeds) |" in text
    )
    assert text.startswith("# x\n") and text.endswith("\nafter\n")
    assert script.main(["--check", "--results", str(results), "--readme", str(readme)]) == 0
    # a re-run of the same notebook replaces its entry; the README is stale until regenerated
    again = _lab_run(tmp_path / "b", "04_cdc", "does not hold")
    data = script.collect([again], json.loads(results.read_text()))
    results.write_text(json.dumps(data))
    assert list(data["notebooks"]) == ["04_cdc"]
    assert script.main(["--check", "--results", str(results), "--readme", str(readme)]) == 1
    with pytest.raises(ValueError, match="smoke"):
        script.collect([_lab_run(tmp_path / "c", "05_mixdl", "holds", profile="smoke")], data)


def test_the_benchmark_block_is_generated_from_the_collected_09_run(tmp_path, load_script):
    script = load_script("update_readme_tables")
    real = script.README.read_text()
    assert script.readme_block(real, script.BENCH_BEGIN, script.BENCH_END)  # the README has the block
    cell = {"mean": 40.9, "std": 1.4, "n": 2, "per_seed": [41.9, 39.9]}
    bench = {
        "extractor": "emoji-features-v1",
        "tasks": {"unseen": {"title": "Unseen class from 3 shots", "columns": ["fid"], "figure": "u.png"}},
        "tables": {
            "unseen": [
                {
                    "method": "lofgan",
                    "label": "LoFGAN",
                    "status": "measured",
                    "note": "",
                    "seeds": [0, 1],
                    "fid": cell,
                }
            ]
        },
    }
    run = tmp_path / "09"
    run.mkdir()
    metrics = {"notebook": "09_benchmark", "profile": "lab", "metrics": {"benchmark": bench}, "claims": []}
    (run / "metrics.json").write_text(json.dumps(metrics))
    results = tmp_path / "results.json"
    readme = tmp_path / "README.md"
    blocks = f"{script.BEGIN}\n{script.END}\n\n{script.BENCH_BEGIN}\n{script.BENCH_END}\n"
    readme.write_text(f"# x\n\n{blocks}\nafter\n")
    first = _lab_run(tmp_path / "a", "04_cdc", "holds")
    assert (
        script.main(["--collect", str(first), str(run), "--results", str(results), "--readme", str(readme)])
        == 0
    )
    text = readme.read_text()
    assert "| LoFGAN | measured | 0, 1 | 40.9 ± 1.4 |" in text and "#### Unseen class from 3 shots" in text
    assert script.main(["--check", "--results", str(results), "--readme", str(readme)]) == 0
    # a README without the benchmark block cannot hold collected benchmark tables: refused, not dropped
    readme.write_text(f"# x\n\n{script.BEGIN}\n{script.END}\n")
    with pytest.raises(ValueError, match="benchmark-tables"):
        script.updated_readme(readme.read_text(), json.loads(results.read_text()))
