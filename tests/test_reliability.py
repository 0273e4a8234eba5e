"""Nothing lost, nothing wrong in silence (issue #18): run folders, parameters, profiles, timeouts, the kernel
transport, and training faults (SIGKILL + resume, full disk, unwritable folder)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from fewshot_lib import runner
from fewshot_lib.checkpoint import CheckpointWriteError, load_checkpoint, save_atomic
from fewshot_lib.cli import main
from fewshot_lib.config import make_run_dir, unique_dir

from conftest import write_notebook

ROOT = Path(__file__).resolve().parent.parent
WARNING = "Kernel is running over TCP without encryption"

ECHO = """
import json, pathlib
pathlib.Path(run_dir, "seen.json").write_text(json.dumps({k: v for k, v in dict(globals()).items()
                                                         if k in ("seed", "label", "alpha", "target_dir")}))
from fewshot_lib.results import write_metrics
write_metrics(run_dir, {"ok": 1}, "01_echo", profile, [])
"""


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    write_notebook(
        folder / "01_echo.ipynb",
        'profile = "auto"\nrun_dir = ""\nseed = 0\nlabel = "x"\nalpha: int = 1\ntarget_dir = ""',
        ECHO,
    )
    write_notebook(
        folder / "02_plain.ipynb",
        'profile = "auto"\nrun_dir = ""',
        "from fewshot_lib.results import write_metrics\nwrite_metrics(run_dir, {}, '02', profile, [])",
    )
    return folder


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "FEWSHOT_PROGRESS": "plain", "PYTHONPATH": str(ROOT), **extra}
    env.pop("FEWSHOT_PROFILE", None)
    return env


# ------------------------------------------------------------------------------------------- run folders
def test_unique_dir_never_hands_out_one_folder_twice(tmp_path, monkeypatch):
    made: list[Path] = []
    threads = [
        threading.Thread(target=lambda: made.append(unique_dir(tmp_path, "20260101-000000")))
        for _ in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 16 and all(p.is_dir() for p in made)
    # a notebook's own default run folder (run_dir="") is unique too
    monkeypatch.setenv("FEWSHOT_RUNS", str(tmp_path / "nb_runs"))
    assert make_run_dir("", "x") != make_run_dir("", "x")


def test_two_runs_started_at_once_keep_both(notebooks, tmp_path, monkeypatch, capsys):
    """Both runs start in the same second (the clock is frozen) and run side by side: two folders, both kept."""
    monkeypatch.setenv("FEWSHOT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(runner.time, "strftime", lambda fmt, *args: "20260101-120000")
    started = threading.Barrier(2)

    def fake_execute(nb, out_dir, params, *args, **kwargs):  # the notebooks' work: slow enough to overlap
        started.wait(timeout=30)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "label.txt").write_text(params["label"])
        time.sleep(0.2)
        return runner.NotebookRun(notebook=nb.name, name=out_dir.name, parameters=params, status="ok")

    monkeypatch.setattr(runner, "execute_one", fake_execute)
    codes: list[int] = []
    threads = [
        threading.Thread(
            target=lambda label=label: codes.append(
                main(
                    [
                        "run",
                        "--profile",
                        "smoke",
                        "--notebooks",
                        str(notebooks),
                        "--only",
                        "01",
                        "-p",
                        "label",
                        label,
                    ]
                )
            )
        )
        for label in ("first", "second")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [0, 0]
    folders = sorted((tmp_path / "runs").iterdir())
    assert [f.name for f in folders] == ["20260101-120000-1", "20260101-120000-2"]
    assert sorted((f / "01_echo" / "label.txt").read_text() for f in folders) == ["first", "second"]
    for f in folders:
        results = json.loads((f / "results.json").read_text())
        assert results["schema_version"] == runner.RESULTS_SCHEMA_VERSION
        assert results["notebook_timeout_s"] == runner.NOTEBOOK_TIMEOUT_S["smoke"]
    printed = capsys.readouterr().out
    assert all(f"{f}/results.json" in printed for f in folders)  # each run names its own folder


def test_tcp_transport_does_warn_so_the_ipc_check_can_fail(notebooks, tmp_path, capfd):
    run = runner.execute_one(notebooks / "02_plain.ipynb", tmp_path / "tcp", {}, transport="tcp")
    assert run.status == "ok", run.error
    assert WARNING in capfd.readouterr().err


def test_an_occupied_out_folder_is_refused(notebooks, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"precious": true}')
    assert main(["run", "--profile", "smoke", "--notebooks", str(notebooks), "--out", str(out)]) == 2
    assert json.loads((out / "results.json").read_text()) == {"precious": True}
    assert "already holds a run" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    "args,message",
    [
        (["-p", "lable", "x"], "No selected notebook declares a parameter 'lable'. Did you mean 'label'?"),
        (["--sweep", "alhpa=1,2"], "Did you mean 'alpha'?"),
        (["-p", "alpha", "abc"], "declares alpha as int, and 'abc' is not one"),
        (["-p", "seed", "1.5"], "declares seed as int"),
        (["-p", "run_dir", "/tmp/x"], "set by the runner"),
    ],
)
def test_bad_parameters_are_refused_before_anything_runs(notebooks, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code = main(["run", "--profile", "smoke", "--notebooks", str(notebooks), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "Declared:" in err or "not one" in err or "runner" in err
    assert not out.exists()  # refused before any notebook ran


def test_parameters_are_typed_resolved_and_recorded_over_ipc(notebooks, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)  # the caller's folder, not the notebooks'
    out = tmp_path / "out"
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
            "seed",
            "1",
            "-p",
            "label",
            "123",
            "-p",
            "target_dir",
            "imgs",
            "-p",
            "alpha",
            "3",
        ]
    )
    assert code == 0
    seen = json.loads((out / "01_echo" / "seen.json").read_text())
    assert seen == {"seed": 1, "label": "123", "alpha": 3, "target_dir": str(tmp_path / "imgs")}
    results = json.loads((out / "results.json").read_text())
    runs = {r["notebook"]: r for r in results["notebooks"]}
    assert runs["01_echo.ipynb"]["parameters"]["target_dir"] == str(tmp_path / "imgs")
    assert runs["01_echo.ipynb"]["not_declared"] == []
    assert runs["02_plain.ipynb"]["not_declared"] == ["alpha", "label", "seed", "target_dir"]
    assert "seed" not in runs["02_plain.ipynb"]["parameters"]  # -p seed reaches only notebooks with a seed
    assert results["requested_parameters"] == {
        "seed": "1",
        "label": "123",
        "target_dir": "imgs",
        "alpha": "3",
    }
    assert WARNING not in capfd.readouterr().err  # the kernels' stderr lands here too


def test_coercion_rules():
    c = runner.coerce_value
    assert c("n", "5", int, "nb") == 5 and c("x", "5", float, "nb") == 5.0 and c("s", "5", str, "nb") == "5"
    assert c("b", "true", bool, "nb") is True and c("b", "0", bool, "nb") is False
    for name, value, kind in (("n", "abc", int), ("n", True, int), ("x", "nan", float), ("b", "maybe", bool)):
        with pytest.raises(runner.ParameterError, match=name):
            c(name, value, kind, "nb")
    assert runner.declared_type({"inferred_type_name": "None", "default": '"auto"'}) is str
    assert runner.declared_type({"inferred_type_name": "None", "default": "None"}) is None
    assert runner.resolve_path_value("npy_path", "~/d.npy", Path("/x")) == str(Path("~/d.npy").expanduser())
    assert runner.resolve_path_value("label", "rel", Path("/x")) == "rel"


def test_profile_errors_are_one_line(capsys, monkeypatch):
    assert main(["run", "--profile", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "fewshot: error: Unknown profile 'bogus'; choose one of smoke, lab, full or auto."
    monkeypatch.setenv("FEWSHOT_PROFILE", "lba")
    assert main(["info"]) == 2
    err = capsys.readouterr().err
    assert "$FEWSHOT_PROFILE" in err and "Did you mean 'lab'?" in err and len(err.strip().splitlines()) == 1


# -------------------------------------------------------------------------------------------- timeouts
def test_a_notebook_over_its_timeout_is_stopped_and_the_others_run(tmp_path, capsys):
    folder = tmp_path / "nbs"
    folder.mkdir()
    write_notebook(
        folder / "01_slow.ipynb", 'profile = "auto"', "import time\nfor _ in range(600):\n    time.sleep(0.1)"
    )
    write_notebook(folder / "02_fast.ipynb", 'profile = "auto"', "x = 1")
    start = time.monotonic()
    code = main(
        [
            "run",
            "--profile",
            "smoke",
            "--notebooks",
            str(folder),
            "--out",
            str(tmp_path / "out"),
            "--notebook-timeout",
            "2",
        ]
    )
    assert code == 1 and time.monotonic() - start < 45  # not the 60 s the slow notebook wanted
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    slow, fast = results["notebooks"]
    assert (
        slow["status"] == "failed" and slow["error"]["ename"] == "NotebookTimeout" and slow["timeout_s"] == 2
    )
    assert slow["seconds"] < 30 and "per-notebook limit is 2 s" in slow["error"]["evalue"]
    assert fast["status"] == "ok"
    assert "NotebookTimeout" in capsys.readouterr().out
    assert set(runner.NOTEBOOK_TIMEOUT_S) == {"smoke", "lab", "full"}


# ------------------------------------------------------------------------------------------ training faults
BUILD = """
import os, time
import torch
from fewshot_lib.models.stylegan2 import Discriminator, Generator
from fewshot_lib.train import GANTrainer, TrainConfig


def build(run_dir, steps, pause=0.0):
    def progress(step, images):  # called after every step: the last completed step, written atomically
        if pause:
            tmp = os.path.join(run_dir, "progress.tmp")
            with open(tmp, "w") as f:
                f.write(str(step))
            os.replace(tmp, os.path.join(run_dir, "progress"))
            time.sleep(pause)

    torch.manual_seed(0)
    G = Generator(16, style_dim=16, n_mlp=1, channel_base=64, channel_max=16)
    D = Discriminator(16, channel_base=64, channel_max=16)
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    cfg = TrainConfig(steps=steps, batch=2, r1_every=2, pl_every=2, n_sample=2, sample_every=1, checkpoint_every=3)
    os.makedirs(run_dir, exist_ok=True)
    return GANTrainer(G, D, images, cfg, run_dir=run_dir, sample_callback=progress)
"""


def test_sigkill_mid_training_then_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    steps, every = 9, 3
    script = tmp_path / "train.py"
    script.write_text(
        BUILD + "\nimport sys\ntorch.set_num_threads(1)\n"
        "build(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])).train(show_progress=False)\n"
    )
    victim = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "killed"), str(steps), "0.25"],
        env=_env(OMP_NUM_THREADS="1"),
    )
    space: dict = {}
    exec(BUILD, space)  # the same builder, in this process
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the child: same arithmetic, bit for bit
    try:
        reference = space["build"](str(tmp_path / "ref"), steps)
        reference.train(show_progress=False)
        progress = tmp_path / "killed" / "progress"
        deadline = time.monotonic() + 240
        while not (progress.exists() and int(progress.read_text() or 0) >= 4):
            assert victim.poll() is None and time.monotonic() < deadline, (
                "the run ended before it could be killed"
            )
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(60) == -signal.SIGKILL
        done = int(progress.read_text())
        saved = int(load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["step"])
        assert 0 < saved < steps and done - saved <= every  # at most one checkpoint interval lost
        resumed = space["build"](str(tmp_path / "killed"), steps)
        result = resumed.train(show_progress=False)  # picks up checkpoint.pt
    finally:
        torch.set_num_threads(threads)
    assert result.steps == reference.step == steps
    for a, b in ((reference.G, resumed.G), (reference.D, resumed.D), (reference.g_ema, resumed.g_ema)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), f"{name} differs after the resume"
    assert reference.history == resumed.history


def _tiny_trainer(run_dir: Path, steps: int = 4):
    space: dict = {}
    exec(BUILD, space)
    trainer = space["build"](str(run_dir), steps)
    trainer.cfg.checkpoint_every, trainer.cfg.sample_every = 1, 0
    return trainer


def test_full_disk_during_training_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = _tiny_trainer(tmp_path)
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) >= 3:  # the third checkpoint write finds the disk full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CheckpointWriteError) as err:
        trainer.train(show_progress=False)
    msg = str(err.value)
    assert str(tmp_path / "checkpoint.pt") in msg and "disk is full" in msg and "unchanged" in msg
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2  # the last good one, intact
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_unwritable_checkpoint_folder_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_atomic({"step": 1}, path)

    def refuse(*args, **kwargs):  # root ignores permission bits, so the refusal is simulated here …
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(CheckpointWriteError, match="not writable") as err:
        save_atomic({"step": 2}, path)
    assert str(path) in str(err.value) and "unchanged" in str(err.value)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    (tmp_path / "file").write_text("x")  # … and this one is real: a file in the way
    trainer = _tiny_trainer(tmp_path / "run", steps=1)
    with pytest.raises(CheckpointWriteError, match="is a file, not a folder") as err:
        trainer.save(tmp_path / "file" / "run" / "checkpoint.pt")
    assert str(tmp_path / "file" / "run" / "checkpoint.pt") in str(err.value)


def test_training_into_an_unusable_run_folder_fails_before_the_first_step(tmp_path):
    (tmp_path / "file").write_text("x")  # a file where the run folder should go
    trainer = _tiny_trainer(tmp_path / "ok", steps=2)
    trainer.run_dir = tmp_path / "file" / "run"
    with pytest.raises(CheckpointWriteError, match="cannot hold checkpoints") as err:
        trainer.train(show_progress=False)
    assert str(tmp_path / "file" / "run") in str(err.value) and trainer.step == 0
