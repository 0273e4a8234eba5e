"""The explorer in a real browser: Voilà (and JupyterLab) on 127.0.0.1, driven by headless Debian Chromium.

Playwright (from PyPI) drives the system's ``/usr/bin/chromium`` through ``executable_path`` — no browser is
downloaded. Without Chromium the tests are skipped with the command that installs it, unless
``FEWSHOT_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where a missing browser is a failure. Nothing leaves the
machine: every request to another host is answered locally with an empty body.

The served notebook is a small one written here (two explorers on the shipped source model) so the test stays
near a minute on 2 cores; it goes through the same :func:`fewshot_lib.explore.serve.voila_argv` as
``make explore`` (token, capped kernels, culling, message-size cap).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
INSTALL = "apt-get update && apt-get install -y chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "browser-test-token"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _need_browser():
    missing = []
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Debian's chromium ({INSTALL})")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    try:
        import voila  # noqa: F401
    except ImportError:
        missing.append("voila (pip install -e .)")
    if missing:
        msg = "browser test needs " + " and ".join(missing)
        if os.environ.get("FEWSHOT_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + " (FEWSHOT_REQUIRE_BROWSER=1)")
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(path: Path) -> Path:
    cells = [
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "from fewshot_lib.models import stylegan2 as sg\n"
        "from fewshot_lib import explore as X\n"
        "from fewshot_lib.explore import widgets as XW\n"
        "session = XW.Session(X.LatentSpace(sg.load_source_model(), n_samples=1000), k=4)",
        "seeds_ui = XW.seeds_explorer(session, seeds='0-3').show()",
        "interp_ui = XW.interpolation_explorer(session, steps=4).show()",
    ]
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"c{i}",
                "metadata": {},
                "outputs": [],
                "source": src,
            }
            for i, src in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))
    return path


def _children(pid: int) -> list[int]:
    """PIDs of the live processes whose parent is ``pid`` (the server's kernels)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.25)
    raise TimeoutError(url)


@pytest.fixture()
def server_env(tmp_path):
    env = dict(
        os.environ,
        FEWSHOT_PROFILE="smoke",
        FEWSHOT_PROGRESS="off",
        OMP_NUM_THREADS="1",
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_DATA_DIR=str(Path(sys.prefix) / "share" / "jupyter"),
        HOME=str(tmp_path / "home"),
    )
    (tmp_path / "home").mkdir()
    return env


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _browser(p, tmp_path):
    return p.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=CHROMIUM,
        args=ARGS,
        headless=True,
        viewport={"width": 1200, "height": 1400},
    )


def _watch(page, errors: list) -> None:
    """Record JavaScript errors; answer every request to another host locally (nothing leaves the machine)."""
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console.error: {m.text}") if m.type == "error" else None)

    def route(r):
        host = r.request.url.split("/")[2] if "://" in r.request.url else ""
        if host.split(":")[0] in ("127.0.0.1", "localhost", ""):
            return r.continue_()
        ctype = "text/css" if r.request.url.endswith(".css") else "text/plain"
        return r.fulfill(status=200, body="", content_type=ctype)

    page.route("**/*", route)


def _img_src(explorer) -> str:
    return explorer.locator("img.fewshot-pixelated").first.get_attribute("src") or ""


def _wait_change(explorer, before: str, timeout: float = 30) -> str:
    end = time.time() + timeout
    while time.time() < end:
        now = _img_src(explorer)
        if now and now != before:
            return now
        time.sleep(0.1)
    raise AssertionError("the displayed image did not change")


def _drive(page, tmp_path, prefix: str) -> None:
    """Move the steps slider and change the space dropdown of the interpolation explorer; type bad seeds."""
    explorers = page.locator(".fewshot-explorer")
    assert explorers.count() == 2
    seeds, interp = explorers.nth(0), explorers.nth(1)
    page.screenshot(path=str(tmp_path / f"{prefix}_1_loaded.png"), full_page=True)

    before = _img_src(interp)
    assert before
    handle = interp.locator(".widget-slider .noUi-handle").first
    handle.focus()
    page.keyboard.press("ArrowRight")  # steps 4 → 5 (reported on release)
    after_slider = _wait_change(interp, before)
    assert interp.locator(".widget-slider .widget-readout").first.inner_text().strip() == "5"

    interp.locator("select").first.select_option(label="Z (spherical)")
    _wait_change(interp, after_slider)
    assert "in Z" in interp.locator(".widget-html").last.inner_text()
    page.screenshot(path=str(tmp_path / f"{prefix}_2_changed.png"), full_page=True)

    text = seeds.locator("input[type=text]").first
    text.fill("zero")
    text.press("Enter")
    page.wait_for_selector(".fewshot-error", timeout=30_000)
    assert "is not a whole number" in seeds.locator(".fewshot-error").inner_text()
    assert "Traceback" not in page.content()
    page.screenshot(path=str(tmp_path / f"{prefix}_3_bad_input.png"), full_page=True)


def test_voila_explorer_in_chromium(tmp_path, server_env):
    _need_browser()
    from playwright.sync_api import sync_playwright

    from fewshot_lib.explore.serve import voila_argv

    nb = _notebook(tmp_path / "explorer.ipynb")
    port = _free_port()
    # idle kernels without a page are culled after 4 s (Voilà's own shutdown-on-close is refused under a token)
    cmd = voila_argv(nb, port, TOKEN, max_kernels=2, cull_idle_s=4, cull_connected=False)
    log = open(tmp_path / "voila.log", "w")
    server = subprocess.Popen(cmd, cwd=tmp_path, env=server_env, stdout=log, stderr=subprocess.STDOUT)
    errors: list[str] = []
    try:
        _wait_http(f"http://127.0.0.1:{port}/voila/static/voila.js", server)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/voila/static/voila.js", timeout=5):
            pass
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:  # no token: the login page
            assert "/login" in r.geturl() and b"fewshot" not in r.read()
        with sync_playwright() as p:
            ctx = _browser(p, tmp_path)
            page = ctx.new_page()
            _watch(page, errors)
            page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}", timeout=60_000)
            page.wait_for_function(
                "document.querySelectorAll('.fewshot-explorer img.fewshot-pixelated').length == 2",
                timeout=90_000,
            )
            assert len(_children(server.pid)) == 1  # one page, one kernel
            _drive(page, tmp_path, "voila")
            page.close(run_before_unload=True)
            ctx.close()
        end = time.time() + 30
        while _children(server.pid) and time.time() < end:
            time.sleep(0.25)
        assert _children(server.pid) == [], "the page's kernel is still running after the page closed"
        assert "Kernel shutdown" in (tmp_path / "voila.log").read_text()
    finally:
        _stop(server)
        log.close()
    assert not errors, errors
    assert (tmp_path / "voila_2_changed.png").stat().st_size > 1000


def test_explorer_inside_jupyterlab(tmp_path, server_env):
    _need_browser()
    from playwright.sync_api import sync_playwright

    nb = _notebook(tmp_path / "explorer.ipynb")
    port = _free_port()
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent)) or "jupyter"
    cmd = [
        jupyter,
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--ServerApp.root_dir={tmp_path}",
        f"--IdentityProvider.token={TOKEN}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--ServerApp.terminals_enabled=False",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI and this project's machines run as root
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(cmd, cwd=tmp_path, env=server_env, stdout=log, stderr=subprocess.STDOUT)
    errors: list[str] = []
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", server)
        with sync_playwright() as p:
            ctx = _browser(p, tmp_path)
            page = ctx.new_page()
            _watch(page, errors)
            page.goto(f"http://127.0.0.1:{port}/lab/tree/{nb.name}?token={TOKEN}", timeout=60_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)  # the kernel is ready
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            page.wait_for_function(
                "document.querySelectorAll('.fewshot-explorer img.fewshot-pixelated').length == 2",
                timeout=90_000,
            )
            _drive(page, tmp_path, "lab")
            page.close()
            ctx.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernels?token={TOKEN}", timeout=10) as r:
            kernels = json.load(r)
        for k in kernels:  # shut the notebook's kernel down
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/kernels/{k['id']}?token={TOKEN}", method="DELETE"
            )
            urllib.request.urlopen(req, timeout=30)
        end = time.time() + 20
        while _children(server.pid) and time.time() < end:
            time.sleep(0.25)
        assert _children(server.pid) == []
    finally:
        _stop(server)
        log.close()
    assert not errors, errors
