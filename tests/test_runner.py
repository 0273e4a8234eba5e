"""The papermill runner: parameter injection, sweeps, results collection, report, failing notebooks."""

import json
from pathlib import Path
import pytest

from fewshot_lib.cli import main
from fewshot_lib.runner import find_notebooks, parse_sweep, parse_value

from conftest import write_notebook

GOOD = """
from fewshot_lib.results import write_metrics, make_claim
claim = make_claim("alpha helps", "score", "none", "m", "b", [alpha + 1, alpha + 1.1], [alpha, alpha], True, kind="sanity")
write_metrics(run_dir, {"alpha": alpha, "label": label}, "01_good", profile, [claim])
"""


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    write_notebook(folder / "01_good.ipynb", 'profile = "auto"\nrun_dir = ""\nalpha = 1\nlabel = "x"', GOOD)
    write_notebook(
        folder / "02_bad.ipynb",
        'profile = "auto"\nrun_dir = ""',
        "x = 1\n" + "raise RuntimeError('deliberate failure')",
    )
    (folder / "notes.ipynb").write_text("{}")  # not numbered: never run
    return folder


def test_parsing_helpers(notebooks):
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("noto") == "noto"
    assert parse_sweep(["a=1,2", "b=x,y"]) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    with pytest.raises(ValueError):
        parse_sweep(["novalues"])
    assert [p.name for p in find_notebooks(notebooks)] == ["01_good.ipynb", "02_bad.ipynb"]
    assert [p.name for p in find_notebooks(notebooks, "good")] == ["01_good.ipynb"]


def test_run_injects_parameters_sweeps_collects_and_reports_failures(notebooks, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--profile",
            "smoke",
            "--notebooks",
            str(notebooks),
            "--out",
            str(out),
            "-p",
            "label",
            "hello",
            "--sweep",
            "alpha=2,5",
        ]
    )
    assert code == 1  # one notebook failed → non-zero exit
    results = json.loads((out / "results.json").read_text())
    runs = {r["name"]: r for r in results["notebooks"]}
    assert set(runs) == {"01_good__alpha=2", "01_good__alpha=5", "02_bad__alpha=2", "02_bad__alpha=5"}
    good = runs["01_good__alpha=5"]
    assert good["status"] == "ok" and good["metrics"] == {"alpha": 5, "label": "hello"}
    assert good["parameters"]["profile"] == "smoke"
    assert results["schema_version"] == 3 and results["requested_parameters"] == {"label": "hello"}
    bad = runs["02_bad__alpha=2"]
    assert bad["status"] == "failed" and bad["error"]["ename"] == "RuntimeError"
    assert bad["error"]["cell"] is not None and "deliberate failure" in bad["error"]["evalue"]
    assert "alpha" not in bad["parameters"]  # 02 declares no alpha, so none was injected
    assert len(results["claims"]) == 2 and all(c["holds"] for c in results["claims"])
    assert (out / "01_good__alpha=2" / "01_good.ipynb").is_file()  # the executed notebook is kept
    report = (out / "report.md").read_text()
    assert report.index("Paper claims") < report.index("## Notebooks") and "deliberate failure" in report
    assert "direction only" not in report  # two seeds per claim here: a real verdict
    assert "<table>" in (out / "report.html").read_text()
    printed = capsys.readouterr().out
    assert "FAILED 02_bad__alpha=2" in printed and "[4/4]" in printed


def test_single_seed_claims_are_marked_as_direction_only(tmp_path):
    from fewshot_lib.results import make_claim
    from fewshot_lib.runner import write_report

    claim = {"notebook": "nb", **make_claim("c", "m", "x", "a", "b", [2.0], [1.0], True, kind="sanity")}
    assert (
        claim["holds"] is None and claim["verdict"] == "not judged: one seed" and claim["improvement"] == 1.0
    )
    # a results file written before one-seed claims were left unjudged still says what its verdict rests on
    old = {**claim, "holds": True}
    old.pop("verdict")
    results = {
        "profile": "smoke",
        "created": "now",
        "ok": 1,
        "failed": 0,
        "notebooks": [],
        "claims": [claim, old],
    }
    md, _ = write_report(results, tmp_path)
    assert (
        "not judged: one seed |" in md.read_text() and "**holds** (1 seed: direction only)" in md.read_text()
    )


def test_the_report_lists_paper_claims_and_sanity_checks_apart_with_per_seed_values(tmp_path):
    from fewshot_lib.results import make_claim
    from fewshot_lib.runner import write_report

    floors = {"fid": 300.0, "recognisability": 0.4}
    noise = {"fid": 250.0, "recognisability": 0.05}
    paper = make_claim(
        "noise vs noise",
        "fid",
        "x",
        "a",
        "b",
        [100, 101],
        [200, 201],
        False,
        floors=floors,
        method_side=noise,
        baseline_side=noise,
    )
    check = make_claim(
        "FID notices blur", "fid", "x", "real", "blur", [10, 11], [50, 52], False, kind="sanity"
    )
    results = {
        "profile": "lab",
        "created": "now",
        "ok": 1,
        "failed": 0,
        "notebooks": [],
        "claims": [{"notebook": "nb", **paper}, {"notebook": "nb", **check}],
    }
    text = write_report(results, tmp_path)[0].read_text()
    paper_part, sanity_part = text.split("## Metric sanity checks")
    assert "noise vs noise" in paper_part and "not measurable at this budget" in paper_part
    assert "FID notices blur" in sanity_part and "**holds**" in sanity_part and "[10, 11]" in sanity_part


def test_each_kernel_starts_in_its_notebooks_folder(tmp_path, monkeypatch):
    folder = tmp_path / "where"
    folder.mkdir()
    write_notebook(
        folder / "01_where.ipynb",
        'profile = "auto"\nrun_dir = ""',
        "import os\nfrom fewshot_lib.results import write_metrics\n"
        "write_metrics(run_dir, {'cwd': os.getcwd()}, '01_where', profile, [])",
    )
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--notebooks", str(folder), "--profile", "smoke", "--out", "out"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["notebooks"][0]["metrics"]["cwd"] == str(folder.resolve())
    assert Path.cwd() == tmp_path


def test_run_with_nothing_matching(notebooks, tmp_path):
    assert main(["run", "--notebooks", str(notebooks), "--only", "zzz", "--out", str(tmp_path / "o")]) == 2


def test_parallel_jobs_a_slurm_array_and_a_merge_give_one_results_file(notebooks, tmp_path, monkeypatch):
    import os
    import subprocess

    from fewshot_lib.runner import thread_budget

    assert thread_budget(2, cpus=2) == 1 and thread_budget(1, cpus=8) == 8 and thread_budget(16, cpus=2) == 1
    # Jobs run on threads of one process, so none may change the process's folder: two chdirs racing left the
    # caller in a notebook folder and broke every later relative path of the test session.
    # (papermill itself "changes" to the current folder around each read and write; that one is harmless.)
    here, chdir = Path.cwd(), os.chdir

    def no_chdir(path):
        if Path(path).resolve() != here:
            raise AssertionError(f"the runner changed the process's folder to {path}")
        chdir(path)

    monkeypatch.setattr(os, "chdir", no_chdir)
    good = ["--notebooks", str(notebooks), "--only", "01_good", "--profile", "smoke"]
    assert main(["run", *good, "--sweep", "alpha=2,5", "--jobs", "2", "--out", str(tmp_path / "par")]) == 0
    monkeypatch.undo()
    par = json.loads((tmp_path / "par" / "results.json").read_text())
    assert [r["name"] for r in par["notebooks"]] == ["01_good__alpha=2", "01_good__alpha=5"]  # job order kept
    assert [r["metrics"]["alpha"] for r in par["notebooks"]] == [2, 5]
    assert main(["run", *good, "--jobs", "0", "--out", str(tmp_path / "zero")]) == 2

    # The SLURM array: one line per notebook × sweep value; run its lines here as the array tasks would.
    slurm = tmp_path / "slurm"
    assert main(["run", *good, "--sweep", "alpha=3,4", "--emit-slurm", str(slurm)]) == 0
    script = (slurm / "run_array.sbatch").read_text()
    lines = (slurm / "jobs.txt").read_text().splitlines()
    assert "#SBATCH --array=0-1" in script and len(lines) == 2 and "-p alpha 3" in lines[0]
    # Array task 0 is a plain `fewshot run` into its own folder: run it here as SLURM would.
    assert (
        subprocess.run(
            lines[0].replace("fewshot run", f"{os.sys.executable} -m fewshot_lib.cli run", 1),
            shell=True,
            capture_output=True,
        ).returncode
        == 0
    )
    merged = tmp_path / "merged"
    task0 = next((slurm / "runs").iterdir())
    assert main(["merge", str(tmp_path / "par"), str(task0), "--out", str(merged)]) == 0
    results = json.loads((merged / "results.json").read_text())
    assert [r["metrics"]["alpha"] for r in results["notebooks"]] == [2, 5, 3] and len(results["claims"]) == 3
    assert all((merged / r["name"]).is_dir() for r in results["notebooks"])  # notebooks copied in
    assert "alpha helps" in (merged / "report.md").read_text()
    assert main(["merge", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m2")]) == 2


def test_a_seed_sweep_that_would_run_a_seed_twice_is_refused(tmp_path):
    # A method notebook runs seeds seed … seed + n_seeds − 1 itself; `--sweep seed=0,1` at 3 seeds per job would
    # run seeds 1 and 2 twice and count them twice in the aggregated table.
    from fewshot_lib.runner import ParameterError, validate_parameters

    nb = tmp_path / "04_cdc.ipynb"  # a notebook the experiment protocol knows (3 seeds at lab)
    write_notebook(nb, "profile = 'auto'\nseed = 0\nn_seeds: int = 0\n", "print(seed)")
    with pytest.raises(ParameterError, match="both run seed 1"):
        validate_parameters([nb], {}, [{"seed": "0"}, {"seed": "1"}], tmp_path, profile="lab")
    validate_parameters([nb], {}, [{"seed": "0"}, {"seed": "3"}], tmp_path, profile="lab")  # disjoint: fine
    validate_parameters([nb], {"n_seeds": 1}, [{"seed": "0"}, {"seed": "1"}], tmp_path, profile="lab")
    with pytest.raises(ParameterError, match="seed 0"):  # a smaller n_seeds in one point still overlaps
        validate_parameters([nb], {}, [{"seed": "0", "n_seeds": "1"}, {"seed": "0"}], tmp_path, profile="lab")
    # a sweep over something else is a set of different experiments, each with its own seeds 0, 1, 2
    write_notebook(nb, "profile = 'auto'\nseed = 0\nn_seeds: int = 0\ntarget_style = 'a'\n", "print(seed)")
    validate_parameters([nb], {}, [{"target_style": "a"}, {"target_style": "b"}], tmp_path, profile="lab")
    with pytest.raises(ParameterError, match="both run seed 1"):  # … but within one of them the rule holds
        validate_parameters(
            [nb],
            {},
            [{"target_style": "a", "seed": "0"}, {"target_style": "a", "seed": "1"}, {"target_style": "b"}],
            tmp_path,
            profile="lab",
        )


def test_the_report_puts_the_benchmark_tables_with_their_pictures_after_the_claims(tmp_path):
    from fewshot_lib import benchmark_tables as T
    from fewshot_lib.results import make_claim
    from fewshot_lib.runner import write_report

    cell = {"mean": 40.9, "std": 1.4, "n": 2, "per_seed": [41.9, 39.9]}
    rows = [
        {
            "method": "lofgan",
            "label": "LoFGAN",
            "status": "measured",
            "note": "",
            "seeds": [0, 1],
            "fid": cell,
        },
        {"method": "lso", "label": "LSO", "status": "not shipped yet", "note": "issue #17", "seeds": []},
    ]
    bench = {
        "extractor": "emoji-features-v1",
        "tasks": {"unseen": {"title": "Unseen class from 3 shots", "columns": ["fid"], "figure": "u.png"}},
        "tables": {"unseen": rows},
    }
    run = {
        "name": "09_benchmark",
        "output": "09.ipynb",
        "status": "ok",
        "seconds": 1.0,
        "error": None,
        "metrics": {"benchmark": bench},
        "claims": [],
        "figures": ["u.png"],
    }
    claim = make_claim("c", "fid", "x", "a", "b", [1.0, 1.1], [2.0, 2.1], False, kind="sanity")
    results = {
        "profile": "lab",
        "created": "now",
        "ok": 1,
        "failed": 0,
        "notebooks": [run],
        "claims": [{"notebook": "03", **claim}],
    }
    md_path, html_path = write_report(results, tmp_path)
    text = md_path.read_text()
    assert text.index("Paper claims") < text.index("## Benchmark") < text.index("## Notebooks")
    assert "\n".join(T.markdown_table(rows, ["fid"])) in text  # the same rows as the notebook printed
    assert "| LSO | not shipped yet | — | — | issue #17 |" in text
    assert "](09_benchmark/u.png)" in text and "<img src='09_benchmark/u.png'" in html_path.read_text()
    # a run without benchmark tables has no such section
    run["metrics"] = {}
    assert "## Benchmark" not in write_report(results, tmp_path)[0].read_text()
