"""Capture real Bokeh websocket traffic for tether's protocol unit tests.

Runs a small Panel app under `panel serve` with a hook that logs every
websocket fragment in both directions, drives it with a real headless
Chromium (over the DevTools protocol, so every browser->server message is
produced by the real BokehJS serializer), and writes the interesting
messages to crates/tether/src/protocol/fixtures/.

Usage (from the repo root, needs Debian's `chromium`):

    .venv/bin/python tools/capture_fixtures.py [--keep /tmp/capture]

Everything binds to 127.0.0.1 on free ports. Nothing outside loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "crates/tether/src/protocol/fixtures"

APP = r'''
import pandas as pd
import panel as pn
import holoviews as hv

hv.extension("bokeh")

df = pd.DataFrame({"x": [0, 1, 2, 3, 4], "y": [3.0, 1.0, 4.0, 1.5, 5.0]})
table = pn.widgets.Tabulator(df, selectable=True, show_index=False, name="table")
button = pn.widgets.Button(name="Plot")
slider = pn.widgets.IntSlider(name="n", start=0, end=10, value=3)
text = pn.widgets.TextInput(name="text")
password = pn.widgets.PasswordInput(name="pw")
select = pn.widgets.Select(name="sel", options=["a", "b", "c"])
menu = pn.widgets.MenuButton(name="Menu", items=[("One", "one"), ("Two", "two")])
out = pn.Column(pn.pane.Markdown("no plot yet"))

def plot(_):
    rows = df.iloc[table.selection] if table.selection else df
    out[:] = [pn.pane.HoloViews(hv.Curve(rows, "x", "y"), height=200, width=300)]

button.on_click(plot)
# Touch the browser-environment models so they are part of the document.
pn.state.location
pn.state.browser_info
pn.Column(table, button, slider, text, password, select, menu, out).servable()
'''

HOOK = r'''
import base64, json, os, sys
from bokeh.server.views.ws import WSHandler
from tornado.websocket import WebSocketHandler

_log = open(os.environ["TETHER_CAPTURE_LOG"], "a")

def _rec(conn, direction, fragment):
    entry = {"conn": id(conn), "dir": direction}
    if isinstance(fragment, (bytes, bytearray, memoryview)):
        entry["binary"] = base64.b64encode(bytes(fragment)).decode()
    else:
        entry["text"] = fragment
    _log.write(json.dumps(entry) + "\n")
    _log.flush()

_on_message = WSHandler.on_message
async def on_message(self, fragment):
    _rec(self, "in", fragment)
    return await _on_message(self, fragment)
WSHandler.on_message = on_message

# Panel writes patches with tornado's WebSocketHandler.write_message directly
# (panel/io/document.py), bypassing WSHandler's override, so hook the base.
_write_message = WebSocketHandler.write_message
def write_message(self, message, binary=False):
    _rec(self, "out", message)
    return _write_message(self, message, binary)
WebSocketHandler.write_message = write_message

from panel.command import main
sys.argv = ["panel"] + sys.argv[1:]
sys.exit(main())
'''

JS_FIND = r'''
window.__tether = {
  doc() { return Bokeh.documents[0]; },
  model(name) {
    for (const m of this.doc().all_models) if (m.constructor.__name__ == name) return m;
    throw new Error("no model " + name);
  },
  deep(root, pred) {
    const stack = [root];
    while (stack.length) {
      const n = stack.pop();
      if (n.nodeType == 1 && pred(n)) return n;
      if (n.shadowRoot) stack.push(n.shadowRoot);
      for (const c of n.children || []) stack.push(c);
    }
    return null;
  },
  view(model) {
    const v = Bokeh.index.find_one(model);
    if (!v) throw new Error("no view");
    return v;
  },
  button(label) {
    const b = this.deep(document, n => n.tagName == "BUTTON" && n.textContent.trim() == label);
    if (!b) throw new Error("no button " + label);
    return b;
  },
};
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> str:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read().decode()
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


class Cdp:
    """A tiny Chrome DevTools Protocol client for one page target."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expr: str):
        res = await self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS failed: {expr}: {res['exceptionDetails']}")
        return res.get("result", {}).get("value")

    async def wait_js(self, expr: str, timeout: float = 60.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if await self.js(expr):
                    return
            except RuntimeError:
                pass
            await asyncio.sleep(0.3)
        raise TimeoutError(expr)


async def open_page(devtools_port: int, url: str) -> tuple[Cdp, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{devtools_port}/json/new?{url}", method="PUT")
    with urllib.request.urlopen(req) as r:
        target = json.loads(r.read())
    ws = await websockets.connect(target["webSocketDebuggerUrl"], max_size=None)
    cdp = Cdp(ws)
    await cdp.call("Runtime.enable")
    await cdp.wait_js("window.Bokeh !== undefined && Bokeh.documents.length > 0")
    await cdp.js(JS_FIND)
    # Let document_ready, BrowserInfo and layout feedback arrive.
    await asyncio.sleep(2.5)
    return cdp, ws


async def drive(devtools_port: int, url: str) -> None:
    cdp, ws = await open_page(devtools_port, url)
    steps = [
        # Tabulator row selection, exactly as Panel's tabulator view does it.
        "__tether.model('DataTabulator').source.selected.indices = [1, 3]",
        # A slider drag end sets value and value_throttled.
        "(() => { const s = __tether.model('Slider'); s.value = 7; s.value_throttled = 7; })()",
        "(() => { const t = __tether.model('TextInput'); t.value_input = 'hi'; t.value = 'hi'; })()",
        "(() => { const p = __tether.model('PasswordInput'); p.value_input = 's3cret'; p.value = 's3cret'; })()",
        "__tether.model('CustomSelect').value = 'b'",
        # Real DOM clicks: BokehJS emits the bokeh_event itself.
        "__tether.button('Plot').click()",
    ]
    for step in steps:
        await cdp.js(step)
        await asyncio.sleep(1.0)
    await cdp.wait_js("[...__tether.doc().all_models].some(m => m.constructor.__name__ == 'GlyphRenderer')")
    await asyncio.sleep(1.0)
    await cdp.js("__tether.button('Menu').click()")
    await asyncio.sleep(0.5)
    # The menu's item handler, as a click on the second item runs it.
    await cdp.js("__tether.view(__tether.model('Dropdown'))._item_click(1)")
    await asyncio.sleep(1.5)
    await ws.close()

    # A second session of the same app: same structure, different ids.
    cdp2, ws2 = await open_page(devtools_port, url)
    await ws2.close()


def load_log(path: Path) -> dict[int, list[dict]]:
    conns: dict[int, list[dict]] = {}
    for line in path.read_text().splitlines():
        e = json.loads(line)
        conns.setdefault(e["conn"], []).append(e)
    return conns


def assemble(frames: list[dict]) -> list[dict]:
    """Group one direction's fragments into messages (header, metadata, content, buffers)."""
    msgs, i = [], 0
    while i < len(frames):
        header = json.loads(frames[i]["text"])
        n = 3 + 2 * header.get("num_buffers", 0)
        parts = frames[i : i + n]
        msgs.append({"header": header, "parts": parts, "content": parts[2]["text"]})
        i += n
    return msgs


def write(name: str, text: str) -> None:
    (OUT / name).write_text(text)
    print(f"  {name}: {len(text)} bytes")


def frames_json(msg: dict) -> str:
    return json.dumps([{k: v for k, v in p.items() if k in ("text", "binary")} for p in msg["parts"]], indent=0)


def export(log: Path) -> None:
    conns = list(load_log(log).values())
    if len(conns) < 2:
        raise SystemExit(f"expected two websocket sessions, got {len(conns)}")
    s1, s2 = conns[0], conns[1]
    out1 = assemble([f for f in s1 if f["dir"] == "out"])
    in1 = assemble([f for f in s1 if f["dir"] == "in"])
    out2 = assemble([f for f in s2 if f["dir"] == "out"])
    OUT.mkdir(parents=True, exist_ok=True)

    pull1 = next(m for m in out1 if m["header"]["msgtype"] == "PULL-DOC-REPLY")
    pull2 = next(m for m in out2 if m["header"]["msgtype"] == "PULL-DOC-REPLY")
    write("s1_pull_reply.json", pull1["content"])
    write("s2_pull_reply.json", pull2["content"])

    # Every browser->server PATCH-DOC, in order, one content per line.
    patches_in = [m for m in in1 if m["header"]["msgtype"] == "PATCH-DOC"]
    write("s1_client_patches.jsonl", "".join(m["content"] + "\n" for m in patches_in))

    # Server->browser PATCH-DOCs, content only, one per line (the click's plot among them).
    patches_out = [m for m in out1 if m["header"]["msgtype"] == "PATCH-DOC"]
    write("s1_server_patches.jsonl", "".join(m["content"] + "\n" for m in patches_out))

    # One whole message with binary buffers, frame by frame, for the assembler.
    with_buffers = [m for m in out1 if m["header"].get("num_buffers", 0) > 0]
    if with_buffers:
        smallest = min(with_buffers, key=lambda m: sum(len(json.dumps(p)) for p in m["parts"]))
        write("s1_frames_with_buffers.json", frames_json(smallest))
    # And the first browser messages, frame by frame.
    write("s1_frames_pull_req.json", frames_json(in1[0]))


async def main_async(keep: Path | None) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("needs Debian's chromium: apt-get install chromium")
    work = keep or Path(tempfile.mkdtemp(prefix="tether-capture-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "app.py").write_text(APP)
    (work / "hook.py").write_text(HOOK)
    log = work / "frames.jsonl"
    log.unlink(missing_ok=True)
    port, devtools = free_port(), free_port()
    env = dict(os.environ, TETHER_CAPTURE_LOG=str(log))
    server = subprocess.Popen(
        [sys.executable, str(work / "hook.py"), "serve", str(work / "app.py"), "--port", str(port),
         "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}"],
        env=env, cwd=work,
    )
    browser = None
    try:
        wait_http(f"http://127.0.0.1:{port}/app")
        browser = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
             f"--remote-debugging-port={devtools}", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={work / 'profile'}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_http(f"http://127.0.0.1:{devtools}/json/version")
        await drive(devtools, f"http://127.0.0.1:{port}/app")
        await asyncio.sleep(1.0)
    finally:
        if browser:
            browser.terminate()
            browser.wait()
        server.terminate()
        server.wait()
    export(log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="work directory to keep (app, log, browser profile)")
    args = ap.parse_args()
    asyncio.run(main_async(args.keep))


if __name__ == "__main__":
    main()
