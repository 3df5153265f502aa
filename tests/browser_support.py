"""A throwaway JupyterLab server and a headless Chromium page for the browser test.

Recipe: ``../shared/BROWSER_TESTING.md``. The server runs in its own process group with temporary config,
data, runtime, settings and workspace folders, and the whole group is killed on exit, kernel included.
Chromium is Debian's (``apt-get install chromium``; ``DRAGNB_CHROMIUM`` overrides the path); Playwright's
own browser download is never used.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    """``DRAGNB_CHROMIUM``, else Debian's chromium on the PATH."""
    path = os.environ.get("DRAGNB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and Path(path).exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyterlab(root: Path, scratch: Path):
    """Start JupyterLab on ``root``; yields (base_url, token). Everything it writes goes under ``scratch``."""
    token, port = "dragnb-test", _free_port()
    dirs = {name: scratch / name for name in ("config", "data", "runtime", "ipython", "settings", "ws")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    settings = dirs["settings"]
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none", "autoStartDefaultKernel": True}))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_DATA_DIR": str(dirs["data"]),
           "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]), "IPYTHONDIR": str(dirs["ipython"])}
    log = open(scratch / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
         f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={dirs['ws']}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; see {scratch / 'jupyterlab.log'}") from None
                time.sleep(0.3)
        yield base, token
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


KERNEL = "window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel"

EXECUTE_JS = """async (code) => {
  const kernel = %s;
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  let out = '';
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream') out += msg.content.text;
    if (msg.header.msg_type === 'error') out += 'ERROR ' + msg.content.ename + ': ' + msg.content.evalue;
  };
  await future.done;
  return out;
}""" % KERNEL


def wait_for_idle_kernel(page, timeout_ms: int = 90_000) -> None:
    page.wait_for_function(f"() => {{ try {{ return {KERNEL}.status === 'idle'; }} catch (e) {{ return false; }} }}",
                           timeout=timeout_ms)


def run_all_cells(page) -> None:
    """Fire 'run all' without awaiting it (awaiting can hang on a kernel dialog; see BROWSER_TESTING.md)."""
    wait_for_idle_kernel(page)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def wait_for_all_cells(page, timeout_ms: int = 180_000) -> None:
    """Every code cell has run (has an execution count) and the kernel is idle: the layout has settled."""
    page.wait_for_function(
        f"""() => {{
          try {{
            const cells = window.jupyterapp.shell.currentWidget.content.widgets;
            const done = cells.every(c => c.model.type !== 'code' || c.model.executionCount !== null);
            return done && {KERNEL}.status === 'idle';
          }} catch (e) {{ return false; }}
        }}""", timeout=timeout_ms)


def kernel_json(page, code: str):
    """Run ``code`` in the notebook's kernel; it must print one JSON document, which is returned parsed."""
    out = page.evaluate(EXECUTE_JS, code)
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"the kernel answered {out!r}") from None


def canvas_point(box: dict, image_size: tuple[int, int], x: int, y: int) -> tuple[float, float]:
    """Page (CSS) position of the centre of image pixel (x, y) on a canvas element with bounding ``box``."""
    h, w = image_size
    return box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h
