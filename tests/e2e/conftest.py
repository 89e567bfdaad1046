"""Fixtures for the browser suite: a tether gateway serving examples/catalog.py, and
Debian's headless Chromium driven by Playwright.

Everything runs on loopback, and every wait has a time limit.

Environment:
  TETHER_BIN     the gateway binary (default: target/debug/tether)
  TETHER_PYTHON  the interpreter with Panel (default: .venv/bin/python)
  CHROMIUM       the browser (default: /usr/bin/chromium)

Artifacts land in target/e2e/: NN-name.png per check, FAILED-*.png for failures,
tether.log (the gateway's stderr at TETHER_LOG=tether=debug) and console.log.
"""
from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "target" / "e2e"
APP = ROOT / "examples" / "catalog.py"
TETHER_BIN = Path(os.environ.get("TETHER_BIN", ROOT / "target" / "debug" / "tether"))
PYTHON = Path(os.environ.get("TETHER_PYTHON", ROOT / ".venv" / "bin" / "python"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

# Debian's chromium as root: without the background-networking flags it stalls.
# Playwright adds --headless and a fresh --user-data-dir of its own for every launch.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    # Tests touch loopback only: every other name fails to resolve, here as on a CI runner.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]

SERVING = re.compile(r"^tether: serving (https?://127\.0\.0\.1:(\d+)(?:/[\w.-]+)*/catalog)\s*$")
WORKER_PID = re.compile(r"worker ready .*pid=(\d+)")
START_TIMEOUT = 120  # seconds: the Panel worker imports holoviews/pandas on a busy 2-core box
STOP_TIMEOUT = 30  # seconds: tether drains for 5 s, then stops its workers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Tether:
    """One `tether serve examples/catalog.py` in a fixed working directory.

    `restart()` stops it with SIGTERM and starts it again in the same directory, so the
    same `.tether/secret` and `.tether/state.db` are used, and on the same port if it is
    still free."""

    def __init__(
        self,
        workdir: Path,
        log_path: Path,
        extra_args: list[str] | None = None,
        binary: Path = TETHER_BIN,
        python: Path | None = PYTHON,
    ):
        """`python=None` leaves the interpreter to tether (no TETHER_PYTHON, no VIRTUAL_ENV)."""
        self.workdir = workdir
        self.extra_args = extra_args or []
        self.binary = binary
        self.python = python
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.port = 0
        self.starts = 0
        self.worker_pids: list[int] = []
        self.last_stop_seconds: float | None = None
        self.leftover_workers: list[int] = []

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> str:
        assert self.proc is None, "tether is already running"
        self.starts += 1
        env = dict(os.environ)
        env.pop("TETHER_PYTHON", None)
        env.pop("VIRTUAL_ENV", None)
        if self.python is not None:
            env["TETHER_PYTHON"] = str(self.python)
        env["TETHER_LOG"] = env.get("TETHER_E2E_LOG", "tether=debug")
        env.pop("BOKEH_SECRET_KEY", None)
        cmd = [str(self.binary), "serve", str(APP), "--port", str(self.port), *self.extra_args]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(cmd)} (cwd {self.workdir})\n".encode())
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(stream):
            for raw in stream:
                lines.put(raw.decode(errors="replace"))
            lines.put(None)

        threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise AssertionError(f"tether did not announce its URL within {START_TIMEOUT}s; see {self.log_path}")
            try:
                line = lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait(timeout=10)
                self.proc = None
                if self.port and "cannot listen" in self.log_tail():
                    self.port = 0  # the old port was taken meanwhile: any port will do
                    return self.start()
                raise AssertionError(f"tether exited with {code} before serving; log tail:\n{self.log_tail(60, raw=True)}")
            m = SERVING.match(line)
            if m:
                self.url, self.port = m.group(1), int(m.group(2))
                break
        self.worker_pids = [int(p) for p in WORKER_PID.findall(self.log_since_start())]
        return self.url

    def stop(self) -> None:
        """SIGTERM, then wait; SIGKILL the process group only if it overstays."""
        if self.proc is None:
            return
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.last_stop_seconds = time.monotonic() - t0
        self.proc = None
        # Workers must not outlive the gateway; give them a moment, then report leftovers.
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in self.worker_pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in self.worker_pids if _alive(p)]
        for p in left:
            os.kill(p, signal.SIGKILL)
        self.leftover_workers = left

    def restart(self) -> str:
        self.stop()
        return self.start()

    def connected_tabs(self) -> int | None:
        """The gateway's tether_connected_tabs gauge (None if it cannot be read)."""
        base = self.url.rsplit("/", 1)[0]
        try:
            with urllib.request.urlopen(base + "/.tether/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        m = re.search(r"^tether_connected_tabs (\d+)", text, re.M)
        return int(m.group(1)) if m else None

    def wait_no_tabs(self, timeout: float = 5.0) -> float:
        """Waits until the gateway counts no connected tab; returns the seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            n = self.connected_tabs()
            if n is None:
                time.sleep(1.0)  # no gauge: wait as long as a person reopening a tab would
                break
            if n == 0:
                break
            time.sleep(0.05)
        return time.monotonic() - t0

    # -- evidence --------------------------------------------------------------------
    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_since_start(self) -> str:
        # The offset counts bytes, and the log has multi-byte characters (the ellipsis of
        # shortened user ids): slice the bytes, not the decoded text.
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[self._log_offset:].decode(errors="replace")

    def log_tail(self, n: int = 40, raw: bool = False) -> str:
        lines = [l for l in self.log_since_start().splitlines() if raw or "tether::worker::output" not in l]
        return "\n".join(lines[-n:])

    def page_lines(self) -> list[str]:
        """The gateway's `page` log lines since the last start (reattach/restore flags)."""
        return [l for l in self.log_since_start().splitlines() if " page " in l or l.rstrip().endswith(" page")]


@contextlib.contextmanager
def serving(artifacts: Path, name: str, extra_args: list[str]):
    """A gateway of its own, in a fresh working directory, logging to tether-NAME.log."""
    workdir = Path(tempfile.mkdtemp(prefix=f"tether-e2e-{name}-"))
    server = Tether(workdir, artifacts / f"tether-{name}.log", extra_args)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in list(ARTIFACTS.glob("*.png")) + list(ARTIFACTS.glob("*.log")):
        old.unlink()
    return ARTIFACTS


@pytest.fixture(scope="session")
def tether(artifacts):
    assert TETHER_BIN.exists(), f"{TETHER_BIN} is missing: run `cargo build --bin tether`"
    assert PYTHON.exists(), f"{PYTHON} is missing: run `make venv`"
    workdir = Path(tempfile.mkdtemp(prefix="tether-e2e-"))
    server = Tether(workdir, artifacts / "tether.log")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


# Injected into every page before its own scripts run.
# window.__tetherState() reads what the page has rendered, from BokehJS's view tree
# (Bokeh.index): the Tabulator's selected row indices, the plot's legend labels and titles,
# and how many line glyphs are drawn. The plot is canvas, so its legend and title are read
# from the models behind the rendered views, not from the DOM. Views, not all the models
# of Bokeh.documents[0]: a replaced plot's models can linger in the document.
# window.__tetherFirst is that state at the first animation frame in which the app is
# rendered (its Tabulator has a view): what the user sees when the page first appears.
INIT_JS = """
(() => {
  const label = (l) => l == null ? null : (typeof l === 'string' ? l : l.value);
  window.__tetherState = () => {
    if (!window.Bokeh || !Bokeh.index || !Bokeh.documents || !Bokeh.documents.length) return null;
    const s = {selected: null, legend: [], titles: [], lines: 0};
    for (const view of Bokeh.index.all_views()) {
      const m = view.model, t = m.type || '';
      if (t.endsWith('DataTabulator')) s.selected = [...m.source.selected.indices].sort((a, b) => a - b);
      else if (t === 'Legend' && m.visible) for (const item of m.items) s.legend.push(label(item.label));
      else if (t === 'Title' && m.text) s.titles.push(m.text);
      else if (t === 'GlyphRenderer' && m.visible && m.glyph && m.glyph.type === 'Line') s.lines += 1;
    }
    return s.selected === null ? null : s;
  };
  window.__tetherFirst = null;
  const tick = () => {
    let s = null;
    try { s = window.__tetherState(); } catch (e) { s = null; }
    if (s) { window.__tetherFirst = s; return; }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})();
"""


class Browser:
    """Playwright's Chromium plus bookkeeping: every page is tracked, so a failing test can
    screenshot whatever is open, and console errors are collected per page."""

    def __init__(self, browser, artifacts: Path):
        self.browser = browser
        self.console_log = artifacts / "console.log"
        self.pages = []
        self.contexts = []
        self.errors = []  # (context name, text) of every console error and page error

    def new_context(self, name: str, **options):
        ctx = self.browser.new_context(viewport={"width": 1200, "height": 900}, **options)
        ctx.set_default_timeout(30_000)
        ctx.set_default_navigation_timeout(60_000)
        ctx.tether_name = name
        ctx.add_init_script(INIT_JS)
        ctx.on("page", lambda page: self._track(page, name))
        self.contexts.append(ctx)
        return ctx

    def _track(self, page, name):
        self.pages.append(page)
        page.console_errors = []

        def note(kind, text):
            with open(self.console_log, "a") as f:
                f.write(f"[{name} {time.strftime('%H:%M:%S')}] {kind}: {text}\n")
            if kind in ("error", "pageerror"):
                page.console_errors.append(text)
                self.errors.append((name, text))

        # Every websocket text frame the page receives, in order (binary buffers as None).
        page.ws_frames = []
        page.websockets = []

        def on_ws(ws):
            page.websockets.append(ws)
            note("websocket", f"open {ws.url}")
            ws.on("framereceived", lambda p: page.ws_frames.append(p if isinstance(p, str) else None))
            ws.on("close", lambda _ws: note("websocket", f"closed {ws.url}"))
            ws.on("socketerror", lambda e: note("websocket", f"error {e}"))

        page.on("websocket", on_ws)
        page.on("console", lambda msg: note(msg.type, msg.text))
        page.on("requestfailed", lambda r: note("requestfailed", f"{r.url} {r.failure}"))
        page.on("pageerror", lambda err: note("pageerror", str(err)))

    def open_pages(self):
        return [p for p in self.pages if not p.is_closed()]


@pytest.fixture(scope="session")
def browser(artifacts):
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        yield Browser(b, artifacts)
        b.close()


@pytest.fixture(scope="session")
def user_a(browser):
    """The first user's browser context; the checks 1-4 (and the extras) share it."""
    ctx = browser.new_context("A")
    yield ctx
    ctx.close()


@pytest.fixture
def new_context(browser):
    """Makes more browser contexts (other users); they are closed after the test, so a
    failing test's screenshots still see their pages."""
    made = []

    def make(name: str, **options):
        ctx = browser.new_context(name, **options)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture(autouse=True)
def no_console_errors(request):
    """A check also fails if a page logged a console error or threw during it."""
    if "browser" not in request.fixturenames:
        yield
        return
    b = request.getfixturevalue("browser")
    seen = len(b.errors)
    yield
    new = b.errors[seen:]
    assert not new, f"browser console errors during the check: {new}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        b = item.funcargs.get("browser")
        if b is not None:
            stem = item.name.removeprefix("test_").replace("_", "-")
            for i, page in enumerate(b.open_pages()):
                try:
                    page.screenshot(path=str(ARTIFACTS / f"FAILED-{stem}-{i}.png"), timeout=10_000)
                except Exception:  # noqa: BLE001 - a failed screenshot must not hide the failure
                    pass
        server = item.funcargs.get("tether")
        if server is not None:
            rep.sections.append(("tether log (tail, without worker output)", server.log_tail(40)))
