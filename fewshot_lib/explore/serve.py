"""Serve the latent explorer notebook as a Voilà web app (``make explore``), safely by default.

* Binds to ``127.0.0.1`` only, and asks for a token (printed in the URL; a fresh random one unless given).
  A course reaches it through an authenticated tunnel or a reverse proxy with its own login — never an open port.
* At most ``--max-kernels`` visitors at once (each page runs its own kernel); a page beyond that gets
  "503 too many explorers open". Kernels idle for ``--cull-idle`` seconds are shut down, connected or not.
* Messages from the browser (an upload travels as one) are capped at ``--max-message-mib``; the explorer
  itself refuses images over 4 MiB, keeps uploads in memory or in its session's temporary folder, and reads
  typed paths only inside the data folder and that folder.

    python -m fewshot_lib.explore.serve                      # notebooks/08_latent_explorer.ipynb on :8866
    python -m fewshot_lib.explore.serve --port 9000 --max-kernels 20 --token "$(cat token.txt)"
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Integer

NOTEBOOK = "08_latent_explorer.ipynb"


class CappedKernelManager(AsyncMappingKernelManager):
    """A kernel manager that refuses to start more than ``max_kernels`` kernels at once."""

    max_kernels = Integer(4, config=True, help="Most kernels (open explorer pages) at the same time.")

    async def start_kernel(self, *args, **kwargs):
        kernel_id = kwargs.get("kernel_id")
        if (kernel_id is None or kernel_id not in self) and len(self.list_kernel_ids()) >= self.max_kernels:
            from tornado import web

            raise web.HTTPError(503, f"too many explorers open (at most {self.max_kernels}); try again later")
        return await super().start_kernel(*args, **kwargs)


def voila_argv(
    notebook: str | Path,
    port: int = 8866,
    token: str = "",
    max_kernels: int = 4,
    cull_idle_s: int = 600,
    max_message_mib: int = 8,
    ip: str = "127.0.0.1",
    cull_connected: bool = True,
) -> list[str]:
    """The ``voila`` command line with this module's safety settings (see the module docstring).

    ``cull_connected``: also stop kernels whose page is still open but idle (a tab left open must not hold a
    place forever). Voilà's own shutdown-on-close request is refused when a token is set (Voilà 0.5 sends it
    without the XSRF argument), so culling is what frees a closed page's kernel.
    """
    if ip not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(
            f"ip={ip!r}: the explorer binds to the loopback interface only; put a proxy with a login "
            "in front of it to serve others."
        )
    max_bytes = max_message_mib * 2**20
    return [
        sys.executable,
        "-m",
        "voila",
        str(notebook),
        "--no-browser",
        f"--port={port}",
        f"--Voila.ip={ip}",
        f"--Voila.token={token}" if token else "--Voila.token=",
        "--VoilaConfiguration.multi_kernel_manager_class=fewshot_lib.explore.serve.CappedKernelManager",
        f"--CappedKernelManager.max_kernels={max_kernels}",
        f"--MappingKernelManager.cull_idle_timeout={cull_idle_s}",
        f"--MappingKernelManager.cull_interval={max(1, min(60, cull_idle_s // 2))}",
        f"--MappingKernelManager.cull_connected={cull_connected}",
        f"--Voila.tornado_settings={{'websocket_max_message_size': {max_bytes}, 'max_body_size': {max_bytes}}}",
        "--VoilaConfiguration.show_tracebacks=False",
        "--VoilaConfiguration.file_allowlist=[]",
    ]


def main(argv: list[str] | None = None) -> int:
    from ..config import repo_root

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notebook", default=str(repo_root() / "notebooks" / NOTEBOOK))
    ap.add_argument("--port", type=int, default=int(os.environ.get("FEWSHOT_EXPLORE_PORT", 8866)))
    ap.add_argument(
        "--token",
        default=os.environ.get("FEWSHOT_EXPLORE_TOKEN") or secrets.token_urlsafe(24),
        help="the token visitors need (default: a fresh random one, printed)",
    )
    ap.add_argument("--max-kernels", type=int, default=4)
    ap.add_argument(
        "--cull-idle", type=int, default=600, help="seconds before an idle explorer's kernel stops"
    )
    ap.add_argument("--max-message-mib", type=int, default=8)
    args = ap.parse_args(argv)
    cmd = voila_argv(
        args.notebook, args.port, args.token, args.max_kernels, args.cull_idle, args.max_message_mib
    )
    print(f"Latent explorer: http://127.0.0.1:{args.port}/?token={args.token}", flush=True)
    print(
        f"(127.0.0.1 only; at most {args.max_kernels} pages at once; idle pages stop after {args.cull_idle} s; "
        "Ctrl-C stops the server)",
        flush=True,
    )
    os.chdir(Path(args.notebook).resolve().parent)
    os.environ["FEWSHOT_SERVED"] = "1"  # the notebook writes each visitor's files to a temporary folder
    os.environ.setdefault("FEWSHOT_PROGRESS", "off")
    os.execv(cmd[0], cmd)
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    raise SystemExit(main())
