"""A notebook run over several parameter values (``--sweep``, or runs gathered by ``fewshot merge``) gets one
aggregated table in ``results.json`` and the report. The runs are faked (``metrics.json`` contents, no notebook
executed), with values that differ between the points so that a point dropped or two points mixed up shows."""

import json
import re
from dataclasses import asdict

import pytest

from fewshot_lib.cli import main
from fewshot_lib.results import make_claim
from fewshot_lib.runner import NotebookRun, collect_results, write_report
from fewshot_lib.sweep_tables import SEED_NOTE

STYLES = ("fluent_3d", "twemoji")
# per point: a scalar metric and CDC's FID, different for every point
RUNTIME = {"fluent_3d": 11.5, "twemoji": 22.5}
CDC_FID = {"fluent_3d": (40.0, 2.0), "twemoji": (70.0, 3.0)}


def _cell(mean, std):
    return {"mean": mean, "std": std, "n": 3}


def _metrics(style: str) -> dict:
    fid, std = CDC_FID[style]
    return {
        "experiment": "04_cdc",
        "target": style,
        "runtime_seconds": RUNTIME[style],
        "summary": {"tgan": {"fid": _cell(fid + 100, std)}, "cdc": {"fid": _cell(fid, std)}},
    }


def _claim(style: str) -> dict:
    fid = CDC_FID[style][0]
    return make_claim(
        f"CDC beats TGAN on {style}", "fid", "x", "cdc", "tgan", [fid, fid + 1], [fid + 100] * 2, False
    )


def _cdc_run(style: str, name: str | None = None, point: bool = True) -> NotebookRun:
    return NotebookRun(
        notebook="04_cdc.ipynb",
        name=name or f"04_cdc__target_style={style}",
        parameters={"profile": "lab", "seed": 0, "target_style": style, "run_dir": f"/somewhere/{style}"},
        status="ok",
        seconds=1.0,
        output="04_cdc.ipynb",
        metrics=_metrics(style),
        claims=[_claim(style)],
        figures=["adaptation.png", "curves.png"],
        sweep_point={"target_style": style} if point else {},
    )


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of the first Markdown table after ``heading`` (its header row included)."""
    after = text[text.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(after) if line.startswith("|"))
    rows = []
    for line in after[start:]:
        if not line.startswith("|"):
            break
        if not set(line) <= set("|-"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _html_rows(html_text: str) -> list[list[str]]:
    return [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in re.findall(r"<tr>(.*?)</tr>", html_text)]


def _check_cdc_sweep(results: dict, run_names: list[str]) -> dict:
    """The checks every way of getting a target-style sweep of 04 must pass; returns its aggregated entry."""
    (sweep,) = results["sweeps"]
    assert sweep["notebook"] == "04_cdc.ipynb" and sweep["parameters"] == ["target_style"]
    assert [p["label"] for p in sweep["points"]] == ["target_style=fluent_3d", "target_style=twemoji"]
    assert [p["run"] for p in sweep["points"]] == run_names
    rows = sweep["headline"]["rows"]
    assert [(r["point"], r["runtime_seconds"]) for r in rows] == [
        ("target_style=fluent_3d", 11.5),
        ("target_style=twemoji", 22.5),
    ]
    assert sweep["headline"]["columns"] == ["runtime_seconds"]
    methods = {(r["point"], r["method"]): r["fid"]["mean"] for r in sweep["methods"]["rows"]}
    assert methods == {
        ("target_style=fluent_3d", "tgan"): 140.0,
        ("target_style=fluent_3d", "cdc"): 40.0,
        ("target_style=twemoji", "tgan"): 170.0,
        ("target_style=twemoji", "cdc"): 70.0,
    }
    # every point's metrics and claims are kept, each claim labelled with its own point
    runs = {r["name"]: r for r in results["notebooks"]}
    assert [runs[n]["metrics"]["target"] for n in run_names] == list(STYLES)
    assert sorted((c["sweep"], c["claim"]) for c in results["claims"]) == [
        ("target_style=fluent_3d", "CDC beats TGAN on fluent_3d"),
        ("target_style=twemoji", "CDC beats TGAN on twemoji"),
    ]
    return sweep


def _check_cdc_report(folder, run_names: list[str]) -> None:
    text = (folder / "report.md").read_text()
    assert text.count("### 04_cdc.ipynb over target_style") == 1  # one table for the sweep, not one per run
    table = _table_rows(text, "### 04_cdc.ipynb over target_style")
    assert table[0] == ["target_style", "run", "status", "runtime_seconds"]
    assert [(r[0], r[2], r[3]) for r in table[1:]] == [("fluent_3d", "ok", "11.5"), ("twemoji", "ok", "22.5")]
    assert [r[1] for r in table[1:]] == [f"[{n}]({n}/04_cdc.ipynb)" for n in run_names]
    methods = _table_rows(text, "Per method")
    assert [r[:3] for r in methods[1:]] == [
        ["fluent_3d", "tgan", "140 ± 2"],
        ["fluent_3d", "cdc", "40 ± 2"],
        ["twemoji", "tgan", "170 ± 3"],
        ["twemoji", "cdc", "70 ± 3"],
    ]
    # each point's figures under the sweep's table (before the notebooks table), not again under "## Figures"
    sweep_part = text[text.index("## Sweeps") : text.index("## Notebooks")]
    for name, style in zip(run_names, STYLES):
        assert f"![target_style={style}: curves.png]({name}/curves.png)" in sweep_part
    assert "## Figures" not in text
    # the claims table names each claim's point
    claims = _table_rows(text, "## Paper claims")
    for style in STYLES:
        (row,) = [r for r in claims if r[1] == f"CDC beats TGAN on {style}"]
        assert f"target_style={style}" in row[0]
    html_rows = _html_rows((folder / "report.html").read_text())
    assert [
        "fluent_3d",
        f"<a href='{run_names[0]}/04_cdc.ipynb'>{run_names[0]}</a>",
        "ok",
        "11.5",
    ] in html_rows
    assert ["twemoji", f"<a href='{run_names[1]}/04_cdc.ipynb'>{run_names[1]}</a>", "ok", "22.5"] in html_rows
    assert f"<img src='{run_names[1]}/adaptation.png'" in (folder / "report.html").read_text()


def test_a_target_style_sweep_is_one_table_in_results_and_report(tmp_path):
    runs = [_cdc_run(s) for s in STYLES]
    results = collect_results(runs, "lab", sweep=[{"target_style": s} for s in STYLES])
    names = [r.name for r in runs]
    _check_cdc_sweep(json.loads(json.dumps(results)), names)
    (tmp_path / "results.json").write_text(json.dumps(results))
    write_report(results, tmp_path)
    _check_cdc_report(tmp_path, names)


def test_the_aggregation_keeps_a_failed_point_and_never_swaps_points(tmp_path):
    # The points in reverse order, a third one failed: rows follow the runs, each with its own values.
    ok = [_cdc_run(s) for s in reversed(STYLES)]
    failed = NotebookRun(
        notebook="04_cdc.ipynb",
        name="04_cdc__target_style=noto",
        parameters={"profile": "lab", "seed": 0, "target_style": "noto", "run_dir": "/x"},
        status="failed",
        error={"cell": 3, "ename": "RuntimeError", "evalue": "boom", "source": ""},
        sweep_point={"target_style": "noto"},
    )
    results = collect_results([*ok, failed], "lab")
    (sweep,) = results["sweeps"]
    rows = [(r["point"], r["status"], r.get("runtime_seconds")) for r in sweep["headline"]["rows"]]
    assert rows == [
        ("target_style=twemoji", "ok", 22.5),
        ("target_style=fluent_3d", "ok", 11.5),
        ("target_style=noto", "failed (RuntimeError)", None),
    ]
    write_report(results, tmp_path)
    table = _table_rows((tmp_path / "report.md").read_text(), "### 04_cdc.ipynb over target_style")
    assert [(r[0], r[2], r[3]) for r in table[1:]] == [
        ("twemoji", "ok", "22.5"),
        ("fluent_3d", "ok", "11.5"),
        ("noto", "failed (RuntimeError)", "—"),
    ]


def test_a_non_overlapping_seed_sweep_has_a_row_per_seed_block(tmp_path):
    runs = []
    for seed, style in zip((0, 3), STYLES):  # the style only supplies distinct metrics here
        run = _cdc_run(style, name=f"04_cdc__seed={seed}")
        run.parameters = {**run.parameters, "target_style": "fluent_3d", "seed": seed}
        run.sweep_point = {"seed": str(seed)}
        runs.append(run)
    results = collect_results(runs, "lab")
    (sweep,) = results["sweeps"]
    assert sweep["parameters"] == ["seed"]
    assert [(r["point"], r["runtime_seconds"]) for r in sweep["headline"]["rows"]] == [
        ("seed=0", 11.5),
        ("seed=3", 22.5),
    ]
    text = write_report(results, tmp_path)[0].read_text()
    assert SEED_NOTE in text
    assert [(r[0], r[3]) for r in _table_rows(text, "### 04_cdc.ipynb over seed")[1:]] == [
        ("0", "11.5"),
        ("3", "22.5"),
    ]


def test_runs_of_one_notebook_with_nothing_swept_are_told_apart_by_name(tmp_path):
    runs = [_cdc_run("fluent_3d", name="04_cdc"), _cdc_run("fluent_3d", name="04_cdc+", point=False)]
    runs[1].metrics = _metrics("twemoji")
    (sweep,) = collect_results(runs, "lab")["sweeps"]
    assert sweep["parameters"] == ["run"]
    assert [(r["point"], r["runtime_seconds"]) for r in sweep["headline"]["rows"]] == [
        ("run=04_cdc", 11.5),
        ("run=04_cdc+", 22.5),
    ]


def _bench(style: str, fid: float) -> dict:
    """A notebook-09-like benchmark: a task every point shares, and the point's own adaptation task."""
    row = {"method": "lofgan", "label": "LoFGAN", "status": "measured", "note": "", "seeds": [0, 1]}
    adapt = {"method": "cdc", "label": "CDC", "status": "measured", "note": "", "seeds": [0, 1]}
    return {
        "extractor": "emoji-features-v1",
        "tasks": {
            "unseen": {"title": "Unseen class from 3 shots", "columns": ["fid"], "figure": "u.png"},
            f"adapt_{style}": {
                "title": f"Noto → {style}",
                "columns": ["fid", "kid"],
                "figure": f"a_{style}.png",
            },
        },
        "tables": {
            "unseen": [{**row, "fid": {"mean": fid, "std": 1.0, "n": 2, "per_seed": [fid - 1, fid + 1]}}],
            f"adapt_{style}": [{**adapt, "fid": {"mean": fid + 5, "std": 2.0, "n": 2, "per_seed": [0, 0]}}],
        },
    }


def test_a_swept_benchmark_is_merged_with_a_row_group_and_picture_row_per_point(tmp_path):
    fids = {"fluent_3d": 40.0, "twemoji": 60.0}
    runs = [
        NotebookRun(
            notebook="09_benchmark.ipynb",
            name=f"09_benchmark__target_styles={s}",
            parameters={"profile": "lab", "target_styles": s, "run_dir": "/x"},
            status="ok",
            output="09_benchmark.ipynb",
            metrics={"benchmark": _bench(s, fids[s]), "total_seconds": fids[s]},
            figures=["u.png", f"a_{s}.png", "extra.png"],
            sweep_point={"target_styles": s},
        )
        for s in STYLES
    ]
    results = collect_results(runs, "lab")
    merged = results["sweeps"][0]["benchmark"]
    assert list(merged["tasks"]) == ["unseen", "adapt_fluent_3d", "adapt_twemoji"]
    assert [(r["sweep"], r["fid"]["mean"]) for r in merged["tables"]["unseen"]] == [
        ("target_styles=fluent_3d", 40.0),
        ("target_styles=twemoji", 60.0),
    ]
    assert [(r["sweep"], r["fid"]["mean"]) for r in merged["tables"]["adapt_twemoji"]] == [
        ("target_styles=twemoji", 65.0)
    ]
    text = write_report(results, tmp_path)[0].read_text()
    assert text.count("### Unseen class from 3 shots") == 1  # one merged table, not one per run
    unseen = _table_rows(text, "### Unseen class from 3 shots")
    assert unseen[0][:2] == ["sweep point", "method"]
    assert [(r[0], r[4]) for r in unseen[1:]] == [
        ("target_styles=fluent_3d", "40 ± 1"),
        ("target_styles=twemoji", "60 ± 1"),
    ]
    for s in STYLES:  # one picture row per point, from that point's folder
        assert f"](09_benchmark__target_styles={s}/u.png)" in text
        assert f"](09_benchmark__target_styles={s}/a_{s}.png)" in text
        # the picture rows are not repeated under the sweep's table; its other figures are
        assert text.count(f"09_benchmark__target_styles={s}/u.png") == 1
        assert f"![target_styles={s}: extra.png](09_benchmark__target_styles={s}/extra.png)" in text
    assert text.index("## Benchmark") < text.index("## Sweeps") < text.index("## Notebooks")
    html_text = (tmp_path / "report.html").read_text()
    assert "<img src='09_benchmark__target_styles=twemoji/a_twemoji.png'" in html_text
    assert ["target_styles=twemoji", "LoFGAN", "measured", "0, 1", "60 ± 1", ""] in _html_rows(html_text)


def test_merged_benchmark_columns_are_the_union_and_a_missing_one_shows_a_dash():
    from fewshot_lib import benchmark_tables as T

    a, b = _bench("fluent_3d", 40.0), _bench("twemoji", 60.0)
    b["tasks"]["unseen"]["columns"] = ["fid", "kid"]
    b["tables"]["unseen"][0]["kid"] = {"mean": 0.5, "std": 0.1, "n": 2, "per_seed": [0.4, 0.6]}
    merged = T.merge_benchmarks([("p=a", "ra", a), ("p=b", "rb", b)], ["p"])
    assert merged["tasks"]["unseen"]["columns"] == ["fid", "kid"]
    assert merged["tasks"]["unseen"]["figures"] == [
        {"sweep": "p=a", "path": "ra/u.png"},
        {"sweep": "p=b", "path": "rb/u.png"},
    ]
    lines = T.markdown_table(merged["tables"]["unseen"], ["fid", "kid"], "sweep point")
    assert lines[2].startswith("| p=a | LoFGAN | measured | 0, 1 | 40 ± 1 | — |")
    assert lines[3].startswith("| p=b | LoFGAN | measured | 0, 1 | 60 ± 1 | 0.5 ± 0.1 |")
    # the inputs are left as they were, and an unmerged benchmark renders as before: no sweep column
    assert "sweep" not in a["tables"]["unseen"][0] and "figures" not in a["tasks"]["unseen"]
    assert T.markdown_tables(a)[2].startswith("| method | status | seeds | FID ↓ |")


def _fake_run_folder(folder, style: str) -> None:
    """What a SLURM array task leaves: a plain `fewshot run --only 04_cdc -p target_style STYLE` folder."""
    run = _cdc_run(style, name="04_cdc", point=False)
    (folder / "04_cdc").mkdir(parents=True)
    (folder / "04_cdc" / "metrics.json").write_text(
        json.dumps({"metrics": run.metrics, "claims": run.claims})
    )
    for fig in run.figures:
        (folder / "04_cdc" / fig).write_bytes(b"png")
    results = collect_results([run], "lab", requested={"target_style": style})
    assert results["sweeps"] == []  # one run alone is no sweep
    (folder / "results.json").write_text(json.dumps(results))


def test_merge_aggregates_separately_executed_runs_the_same_way(tmp_path):
    folders = [tmp_path / f"task{i}" for i in range(2)]
    for folder, style in zip(folders, STYLES):
        _fake_run_folder(folder, style)
    out = tmp_path / "merged"
    assert main(["merge", *map(str, folders), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    names = [f"04_cdc__target_style={s}" for s in STYLES]  # the shared name gets each run's point
    assert [r["name"] for r in results["notebooks"]] == names
    assert all((out / n / "curves.png").is_file() for n in names)
    _check_cdc_sweep(results, names)
    _check_cdc_report(out, names)


@pytest.mark.parametrize("dropped", [0, 1])
def test_a_merge_missing_a_point_has_no_sweep_table(tmp_path, dropped):
    # Guards the tests above: with one point left there is nothing to aggregate, and the checks notice.
    folders = [tmp_path / f"task{i}" for i in range(2)]
    for folder, style in zip(folders, STYLES):
        _fake_run_folder(folder, style)
    out = tmp_path / "merged"
    assert main(["merge", str(folders[1 - dropped]), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["sweeps"] == []
    with pytest.raises((AssertionError, ValueError)):
        _check_cdc_sweep(results, [f"04_cdc__target_style={s}" for s in STYLES])
    with pytest.raises((AssertionError, ValueError)):
        _check_cdc_report(out, ["04_cdc", "04_cdc"])


def test_the_checks_notice_two_points_swapped(tmp_path):
    # Guards the tests above: the same runs with their metrics exchanged must fail the checks.
    runs = [_cdc_run(s) for s in STYLES]
    runs[0].metrics, runs[1].metrics = runs[1].metrics, runs[0].metrics
    results = collect_results(runs, "lab")
    with pytest.raises(AssertionError):
        _check_cdc_sweep(json.loads(json.dumps(results)), [r.name for r in runs])
    write_report(results, tmp_path)
    with pytest.raises(AssertionError):
        _check_cdc_report(tmp_path, [r.name for r in runs])


def test_results_of_a_sweep_are_json_and_keep_the_run_fields():
    run = _cdc_run("fluent_3d")
    assert asdict(run)["sweep_point"] == {"target_style": "fluent_3d"}
    results = collect_results([run, _cdc_run("twemoji")], "lab")
    assert results["schema_version"] == 3 and json.loads(json.dumps(results)) == results
