"""A real JupyterLab (or Notebook 7) server and a headless Chromium, for end-to-end tests and benchmarks.

Plain helpers, no pytest: ``bench/widgets.py`` imports this module too
(``sys.path.insert(0, "tests/e2e"); import lab``). One server serves a folder on 127.0.0.1 with a
random port, a token and Jupyter state isolated in a temp dir; Playwright drives Debian's
Chromium (never ``playwright install``: it downloads a browser, which fails on machines without
network). A session looks like::

    with lab.JupyterServer(folder) as server, sync_playwright() as p:
        browser = lab.launch_browser(p)
        page = browser.new_page()
        errors = lab.ConsoleErrors(page)
        lab.open_notebook(page, server, "explore.ipynb")
        lab.wait_kernel_idle(page)
        lab.run_all(page)
        lab.wait_cells_done(page, 2)
        print(lab.run_cell_text(page, "print(1 + 1)"))   # '2'

Every helper works in JupyterLab 4 and in Notebook 7 (both expose ``window.jupyterapp``, and the
notebook panel is the shell's current widget in both).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("ODINLAB_CHROMIUM", "/usr/bin/chromium")
INSTALL_CHROMIUM = ("Chromium is needed for the browser tests and was not found at {path}. Install it from "
                    "Debian: `apt-get update && apt-get install -y chromium` (never `playwright install`), or set "
                    "ODINLAB_CHROMIUM to a Chromium binary.")
# From /work/shared/BROWSER.md: headless, software WebGL, nothing that phones home.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Settings that keep JupyterLab quiet and every cell rendered (no windowing, no autosave into the fixture).
QUIET_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
APPS = {"lab": "jupyterlab", "notebook": "notebook"}


class BrowserTestError(RuntimeError):
    """The browser test machinery could not start (no Chromium, a server that never answered)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it).

    >>> 1024 <= free_port() <= 65535
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_notebook(path, sources: list[str]) -> Path:
    """Write a notebook (nbformat v4, python3 kernel) with one code cell per source; returns its path.

    >>> import tempfile, nbformat
    >>> path = write_notebook(Path(tempfile.mkdtemp()) / "a.ipynb", ["x = 1", "print(x)"])
    >>> [cell.source for cell in nbformat.read(path, as_version=4).cells]
    ['x = 1', 'print(x)']
    """
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                       "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    path = Path(path)
    nbformat.write(notebook, path)
    return path


class JupyterServer:
    """A JupyterLab (``app="lab"``) or Notebook 7 (``app="notebook"``) server on 127.0.0.1 for ``root_dir``.

    A context manager: entering starts ``python -m jupyterlab`` (or ``notebook``) from this
    interpreter with a random port and token, its config, runtime, settings and workspaces in a
    temp dir (with the quiet settings: no news, no autosave, no windowing) and
    ``--expose-app-in-browser``, and waits until ``GET /api`` answers; leaving shuts it down.
    Attributes ``port``, ``token``, ``root_dir``, ``app``, ``log`` (the server's output file).

    Example (it starts a real server, so it is not run as a doctest)::

        with JupyterServer(folder) as server:
            server.url("explore.ipynb")   # 'http://127.0.0.1:40123/lab/tree/explore.ipynb?token=...&reset'
    """

    def __init__(self, root_dir, app: str = "lab", *, start_timeout: float = 60.0):
        if app not in APPS:
            raise ValueError(f"app must be 'lab' (JupyterLab) or 'notebook' (Notebook 7), not {app!r}.")
        self.root_dir = Path(root_dir)
        self.app = app
        self.port = free_port()
        self.token = os.urandom(16).hex()
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self._state: str | None = None
        self.log: Path | None = None

    def url(self, notebook_name: str) -> str:
        """The address that opens ``notebook_name`` (relative to ``root_dir``) in this server's app."""
        if self.app == "lab":
            return f"http://127.0.0.1:{self.port}/lab/tree/{notebook_name}?token={self.token}&reset"
        return f"http://127.0.0.1:{self.port}/notebooks/{notebook_name}?token={self.token}"

    def _environment(self) -> dict:
        state = Path(self._state)
        env = dict(os.environ)
        for name, folder in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                             ("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces")):
            (state / folder).mkdir(parents=True, exist_ok=True)
            env[name] = str(state / folder)
        for relative, settings in QUIET_SETTINGS.items():
            target = state / "settings" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(settings))
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _command(self) -> list[str]:
        command = [sys.executable, "-m", APPS[self.app], "--no-browser", "--allow-root", "--ip=127.0.0.1",
                   f"--port={self.port}", "--port-retries=0", f"--IdentityProvider.token={self.token}",
                   f"--ServerApp.root_dir={self.root_dir}", "--expose-app-in-browser"]
        if self.app == "lab":
            command.append("--LabApp.news_url=None")
        return command

    def start(self) -> JupyterServer:
        """Start the server and wait until it answers (raises BrowserTestError with its log if not)."""
        self._state = tempfile.mkdtemp(prefix="odinlab-jupyter-")
        self.log = Path(self._state) / "server.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self._command(), env=self._environment(), cwd=self.root_dir,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)  # polling a process that is starting: nothing to wait on but time
        tail = self.log.read_text(errors="replace")[-3000:]
        self.stop()
        raise BrowserTestError(f"The Jupyter {self.app} server did not answer on port {self.port} within "
                               f"{self.start_timeout:.0f} s. Its log:\n{tail}")

    def stop(self) -> None:
        """POST /api/shutdown, then terminate the process if it is still there; remove the temp state."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/shutdown", method="POST",
                                             headers={"Authorization": f"token {self.token}"}, data=b"")
            try:
                urllib.request.urlopen(request, timeout=5).close()
                process.wait(timeout=10)
            except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
                pass
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # its own session: the kernels it started go too
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        if self._state:
            shutil.rmtree(self._state, ignore_errors=True)
            self._state = None

    def __enter__(self) -> JupyterServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def launch_browser(playwright, **options):
    """Debian's headless Chromium through Playwright (``playwright.chromium``); a clear error if it is missing.

    Example (it starts a browser, so it is not run as a doctest)::

        with sync_playwright() as p:
            browser = launch_browser(p)
    """
    path = Path(CHROMIUM)
    if not (path.exists() or shutil.which(CHROMIUM)):
        raise BrowserTestError(INSTALL_CHROMIUM.format(path=CHROMIUM))
    return playwright.chromium.launch(executable_path=str(path), args=CHROMIUM_FLAGS, **options)


# -- the page ---------------------------------------------------------------------------------------

_PANEL = "window.jupyterapp && window.jupyterapp.shell.currentWidget"

_KERNEL_IDLE = f"""() => {{
  const panel = {_PANEL};
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
    && panel.sessionContext.session.kernel;
  return Boolean(kernel && kernel.status === 'idle' && kernel.connectionStatus === 'connected');
}}"""

# The code cells' execution counts and whether any is pending ([*]), read from the notebook's model.
_CELLS = f"""() => {{
  const panel = {_PANEL};
  if (!panel || !panel.content || !panel.content.model) return null;
  const out = [];
  const cells = panel.content.model.cells;
  for (let i = 0; i < cells.length; i++) {{
    const cell = cells.get(i);
    if (cell.type === 'code') out.push(cell.executionCount);
  }}
  const prompts = Array.from(panel.node.querySelectorAll('.jp-CodeCell .jp-InputPrompt'),
                             (p) => p.textContent.trim());
  return {{counts: out, prompts}};
}}"""

_OUTPUT_TEXT = f"""(index) => {{
  const panel = {_PANEL};
  const cell = panel.content.model.cells.get(index < 0 ? panel.content.model.cells.length + index : index);
  if (!cell || !cell.outputs) return null;
  const parts = [];
  for (const output of cell.outputs.toJSON()) {{
    const text = (value) => Array.isArray(value) ? value.join('') : (value || '');
    if (output.output_type === 'stream') parts.push(text(output.text));
    else if (output.output_type === 'error') parts.push(output.ename + ': ' + output.evalue);
    else if (output.data && output.data['text/plain'] !== undefined) parts.push(text(output.data['text/plain']));
  }}
  return parts.join('');
}}"""


def open_notebook(page, server: JupyterServer, name: str, timeout: float = 60) -> None:
    """Open ``name`` in ``server``'s app and wait until its notebook panel and cells exist."""
    page.goto(server.url(name), timeout=timeout * 1000)
    page.wait_for_function(f"""() => {{
      const panel = {_PANEL};
      return Boolean(panel && panel.content && panel.content.model && panel.content.widgets.length > 0
                     && panel.context && panel.context.isReady);
    }}""", timeout=timeout * 1000)


def wait_kernel_idle(page, timeout: float = 60) -> None:
    """Wait until the notebook's kernel is connected and idle (the status indicator says idle too early)."""
    page.wait_for_function(_KERNEL_IDLE, timeout=timeout * 1000)


def run_all(page) -> None:
    """Run every cell (returns at once; wait with :func:`wait_cells_done`)."""
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def wait_cells_done(page, n_cells: int, timeout: float = 120) -> None:
    """Wait until at least ``n_cells`` code cells ran and none is pending (every prompt shows ``[n]``).

    On a timeout the error says which cells are still waiting and what the first error output says.
    """
    script = f"""(n) => {{
      const state = ({_CELLS})();
      return Boolean(state && state.counts.length >= n && state.counts.every((c) => c !== null && c > 0)
                     && state.prompts.every((p) => /^\\[\\d+\\]:?$/.test(p)));
    }}"""
    try:
        page.wait_for_function(script, arg=n_cells, timeout=timeout * 1000)
    except Exception as error:
        state = page.evaluate(_CELLS)
        outputs = [page.evaluate(_OUTPUT_TEXT, i) for i in range(len(state["counts"]) if state else 0)]
        raise BrowserTestError(f"Cells not done after {timeout} s: {state}. Their outputs: {outputs}") from error


def cell_output_text(page, index: int) -> str:
    """The text of cell ``index``'s outputs (streams, text/plain results, ``Error: message``); -1 is the last."""
    text = page.evaluate(_OUTPUT_TEXT, index)
    return "" if text is None else text


def run_cell_text(page, source: str, timeout: float = 60) -> str:
    """Append a code cell with ``source`` at the end, run it and return its output text (stripped).

    This is how a test reads a Python value back from the kernel: ``run_cell_text(page, "print(len(ex.selection))")``.
    An error in the cell comes back as ``ErrorName: message``.
    """
    index = page.evaluate("""async (source) => {
      const app = window.jupyterapp;
      const notebook = app.shell.currentWidget.content;
      notebook.activeCellIndex = notebook.widgets.length - 1;
      notebook.deselectAll();
      await app.commands.execute('notebook:insert-cell-below');
      const cell = notebook.activeCell;
      cell.model.sharedModel.setSource(source);
      cell.model.executionCount = null;
      app.commands.execute('notebook:run-cell');
      return notebook.activeCellIndex;
    }""", source)
    page.wait_for_function("""(index) => {
      const cell = window.jupyterapp.shell.currentWidget.content.model.cells.get(index);
      return cell && cell.executionCount !== null && cell.executionCount > 0;
    }""", arg=index, timeout=timeout * 1000)
    return cell_output_text(page, index).strip()


def python_json(page, expression: str):
    """The value of a Python expression in the notebook's kernel, through JSON (the notebook must have
    imported json): ``python_json(page, "len(ex.selection)")``."""
    text = run_cell_text(page, f"print(json.dumps({expression}))")
    try:
        return json.loads(text.splitlines()[-1])
    except (ValueError, IndexError):
        raise AssertionError(f"The kernel did not answer {expression!r} with JSON: {text!r}") from None


def open_and_run(page, server, name: str, n_cells: int, timeout: float = 120) -> None:
    """Open notebook ``name``, wait for its kernel, run every cell and wait until all ``n_cells`` ran."""
    open_notebook(page, server, name)
    wait_kernel_idle(page, timeout=90)
    run_all(page)
    wait_cells_done(page, n_cells, timeout=timeout)


def lit_pixels(page, canvas_selector: str) -> int:
    """Pixels of the first canvas matching ``canvas_selector`` that are drawn: not transparent and not
    the background (the color of its top-left pixel). 0 when no such canvas exists.

    The canvas is copied with ``drawImage`` into a 2D canvas (WebGL canvases read back empty otherwise).
    """
    return page.evaluate("""(selector) => {
      const source = document.querySelector(selector);
      if (!source || !source.width || !source.height) return 0;
      const copy = document.createElement('canvas');
      copy.width = source.width; copy.height = source.height;
      const context = copy.getContext('2d');
      context.drawImage(source, 0, 0);
      const data = context.getImageData(0, 0, copy.width, copy.height).data;
      const [r, g, b, a] = [data[0], data[1], data[2], data[3]];
      let lit = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] === 0) continue;
        if (data[i] !== r || data[i + 1] !== g || data[i + 2] !== b || data[i + 3] !== a) lit++;
      }
      return lit;
    }""", canvas_selector)


class ConsoleErrors:
    """Collects the page's console errors and uncaught page errors (with the first line of their stack) from now on.

    ``errors`` is the list of messages; ``assert_none()`` raises with all of them. ``ignore`` lists
    errors that are not the page's fault, each a string or a tuple of strings that must all appear
    in the message (e.g. an error of the Jupyter app itself, with the bundle it comes from).

    >>> class Page:
    ...     def on(self, event, handler): self.handler = handler
    >>> errors = ConsoleErrors(Page(), ignore=[("favicon", "404")])
    >>> errors._keep("GET /favicon.ico 404"); errors._keep("TypeError: x is undefined"); errors.errors
    ['TypeError: x is undefined']
    """

    def __init__(self, page, ignore=()):
        self.errors: list[str] = []
        self.ignore = [(item,) if isinstance(item, str) else tuple(item) for item in ignore]
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)

    def _keep(self, text: str) -> None:
        if not any(all(part in text for part in parts) for parts in self.ignore):
            self.errors.append(text)

    def _on_console(self, message) -> None:
        if message.type == "error":
            location = message.location or {}
            self._keep(f"console.error: {message.text} ({location.get('url', '')}:{location.get('lineNumber', '')})")

    def _on_page_error(self, error) -> None:
        stack = (getattr(error, "stack", None) or "").strip().splitlines()
        where = next((line.strip() for line in stack if line.strip().startswith("at ")), "")
        self._keep(f"page error: {error} {where}".rstrip())

    def assert_none(self) -> None:
        """Raise AssertionError listing every error collected (none: nothing happens)."""
        if self.errors:
            raise AssertionError(f"{len(self.errors)} errors reached the browser console:\n" + "\n".join(self.errors))


def pixels_of_color(page, canvas_selector: str, color: str, tolerance: int = 8) -> list[tuple[float, float]]:
    """Page positions (CSS pixels) of the pixels of the first canvas matching ``canvas_selector`` whose
    color is within ``tolerance`` of ``color`` (``"#rrggbb"``) in each channel and that are opaque; []
    when no such canvas exists. A mark's pixels are where it was drawn: their mean is its centre.

    The canvas is copied with ``drawImage`` into a 2D canvas, as in :func:`lit_pixels`.
    """
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    return [tuple(p) for p in page.evaluate("""([selector, rgb, tolerance]) => {
      const source = document.querySelector(selector);
      if (!source || !source.width || !source.height) return [];
      const copy = document.createElement('canvas');
      copy.width = source.width; copy.height = source.height;
      const context = copy.getContext('2d');
      context.drawImage(source, 0, 0);
      const data = context.getImageData(0, 0, copy.width, copy.height).data;
      const box = source.getBoundingClientRect();
      const sx = box.width / copy.width, sy = box.height / copy.height;
      const out = [];
      for (let k = 0, i = 0; k < data.length; k += 4, i++) {
        if (data[k + 3] < 250) continue;
        if (Math.abs(data[k] - rgb[0]) > tolerance || Math.abs(data[k + 1] - rgb[1]) > tolerance
            || Math.abs(data[k + 2] - rgb[2]) > tolerance) continue;
        const x = i % copy.width, y = Math.floor(i / copy.width);
        out.push([box.left + (x + 0.5) * sx, box.top + (y + 0.5) * sy]);
      }
      return out;
    }""", [canvas_selector, rgb, tolerance])]
