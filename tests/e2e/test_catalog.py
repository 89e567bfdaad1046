"""The original request's five checks, and three more, in a real headless Chromium against
`tether serve examples/catalog.py`.

The checks run in file order and tell one user's story (context A): first visit, select
two rows and plot, close and reopen the tab, restart the server. A second browser context
(B) checks independence; then a reload, a network drop and /.tether/forget.

Every assertion is on what the page shows: the Tabulator's checkboxes in the DOM, and for
the canvas-drawn plot, the legend labels and title held by the page's Bokeh document.
Each check writes target/e2e/NN-name.png.
"""
from __future__ import annotations

import base64
import json
import re
import time

import pytest

from conftest import ARTIFACTS

NAMES = ["alpha", "beta", "gamma", "delta"]
PICK_A = ["alpha", "gamma"]  # user A's rows: indices 0 and 2
PICK_B = ["beta", "delta"]  # user B's rows: indices 1 and 3
PICK_A3 = ["alpha", "gamma", "beta"]  # user A after test_06 ticks beta too (plot order = click order)
DEFAULT = {"selected": [], "legend": [], "titles": [], "lines": 0}


# -- what the page shows --------------------------------------------------------------------
def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def open_catalog(ctx, url: str):
    """Opens `url` in a new tab of `ctx` and waits until the app is on screen: the banner
    and the four table rows are visible. Waits for nothing else, so what is asserted next
    is what the user sees when the page first appears."""
    page = ctx.new_page()
    page.goto(url, wait_until="domcontentloaded")
    wait_rendered(page)
    return page


def wait_rendered(page) -> None:
    page.get_by_text("tether demo:").wait_for(state="visible")
    page.locator(".tabulator-row").nth(3).wait_for(state="visible")
    page.wait_for_function("() => window.__tetherFirst !== null", timeout=10_000)


def state(page) -> dict:
    return page.evaluate("() => window.__tetherState()")


def first_state(page) -> dict:
    return page.evaluate("() => window.__tetherFirst")


def checked_rows(page) -> list[str]:
    """Names of the rows whose checkbox is ticked, as rendered in the table."""
    names = []
    rows = page.locator(".tabulator-row")
    for i in range(rows.count()):
        row = rows.nth(i)
        if row.locator("input[type=checkbox]").is_checked():
            names.append(row.locator('[tabulator-field="name"]').inner_text().strip())
    return names


def shown(page) -> dict:
    """The user-visible state: ticked rows (DOM), selection indices, legend labels and
    title (Bokeh models) and the number of drawn lines."""
    s = state(page)
    s["checked"] = checked_rows(page)
    return s


def expect_plot(names: list[str]) -> dict:
    return {
        "selected": sorted(NAMES.index(n) for n in names),
        "legend": names,
        "titles": [", ".join(names)],
        "lines": len(names),
        "checked": sorted(names, key=NAMES.index),
    }


def wait_for_plot(page, names: list[str], timeout: float = 30_000) -> None:
    title = ", ".join(names)
    page.wait_for_function(
        "t => { const s = window.__tetherState(); return s && s.titles.includes(t) && s.legend.length >= 2; }",
        arg=title,
        timeout=timeout,
    )
    page.locator("canvas").first.wait_for(state="visible", timeout=timeout)


def session_id(page) -> str:
    """The Bokeh session id in the page's token (the token's JSON carries it)."""
    m = re.search(r'"token"\s*:\s*"([A-Za-z0-9_\-]+)', page.content())
    assert m, "no Bokeh token in the page"
    payload = m.group(1)
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["session_id"]


def cookie(ctx, name: str = "tether_id") -> dict | None:
    return next((c for c in ctx.cookies() if c["name"] == name), None)


def pulled_document(page) -> str:
    """The content of the PULL-DOC-REPLY the page received: the document it first drew."""
    frames = page.ws_frames
    for i, f in enumerate(frames):
        if f and f.startswith("{") and '"msgtype"' in f:
            try:
                header = json.loads(f)
            except ValueError:
                continue
            if header.get("msgtype") == "PULL-DOC-REPLY" and i + 2 < len(frames):
                return frames[i + 2] or ""
    return ""


def select_and_plot(page, names: list[str]) -> None:
    for n in names:
        page.locator(".tabulator-row", has_text=n).locator("input[type=checkbox]").click()
    page.wait_for_function(
        "n => { const s = window.__tetherState(); return s && s.selected.length === n; }",
        arg=len(names),
    )
    page.get_by_role("button", name="Plot").click()
    wait_for_plot(page, names)


# -- state shared by the ordered checks -------------------------------------------------------
class Story:
    page_a = None
    session_a: str | None = None
    cookie_a: dict | None = None


story = Story()


@pytest.fixture
def url(tether):
    return tether.url


# -- the five checks ----------------------------------------------------------------------------
def test_01_first_visit(user_a, url):
    """The page loads, the HttpOnly tether_id cookie is set, the banner renders."""
    page = open_catalog(user_a, url)
    story.page_a = page
    shot(page, "01-first-visit")
    c = cookie(user_a)
    assert c is not None, f"no tether_id cookie; cookies: {user_a.cookies()}"
    assert c["httpOnly"], f"tether_id is not HttpOnly: {c}"
    assert c["sameSite"] == "Lax", c
    assert page.get_by_text("select rows, click Plot").is_visible()
    # HttpOnly means page scripts cannot read it; the page's token must not carry it either.
    assert "tether_id" not in page.evaluate("() => document.cookie")
    assert c["value"] not in page.content(), "the identity cookie leaked into the page"
    assert shown(page) == {**DEFAULT, "checked": []}
    story.session_a = session_id(page)
    story.cookie_a = c


def test_02_interact(user_a, url):
    """Tick two rows in the checkbox column, click Plot: two curves named after the rows."""
    page = story.page_a or open_catalog(user_a, url)
    select_and_plot(page, PICK_A)
    shot(page, "02-interact")
    assert shown(page) == expect_plot(PICK_A)


def test_03_close_and_reopen(user_a, url, tether):
    """Close the tab, open the URL in a new tab: the same live session, still plotted."""
    before = story.session_a
    story.page_a.close()
    # A person takes a moment to reopen a tab; by then the gateway has seen the old
    # websocket close. (An immediate reopen races that close: see test_06.)
    tether.wait_no_tabs()
    page = user_a.new_page()
    navigations = []
    page.on("framenavigated", lambda f: navigations.append(f.url) if f == page.main_frame else None)
    page.goto(url, wait_until="domcontentloaded")
    wait_rendered(page)
    story.page_a = page
    first = first_state(page)
    shot(page, "03-reopen")
    assert session_id(page) == before, (
        f"reopened tab got another session; gateway page lines: {tether.page_lines()[-2:]}"
    )
    assert {k: first[k] for k in ("selected", "legend", "titles")} == {
        k: expect_plot(PICK_A)[k] for k in ("selected", "legend", "titles")
    }, f"first frame of the reopened page: {first}"
    wait_for_plot(page, PICK_A, timeout=10_000)
    assert shown(page) == expect_plot(PICK_A)
    assert navigations == [url], f"the page navigated more than once: {navigations}"
    assert cookie(user_a)["value"] == story.cookie_a["value"]


def test_04_restart(user_a, tether):
    """SIGTERM tether and its workers, start it again in the same directory: a new session
    whose first visible frame already has the selection and both curves."""
    before = story.session_a
    story.page_a.close()
    old_url = tether.url
    new_url = tether.restart()
    assert not tether.leftover_workers, f"workers outlived the gateway: {tether.leftover_workers}"
    page = open_catalog(user_a, new_url)
    story.page_a = page
    first = first_state(page)
    pulled = pulled_document(page)
    shot(page, "04-restart-first-visible")
    assert session_id(page) != before, "a restarted server cannot have the old live session"
    want = expect_plot(PICK_A)
    assert {k: first[k] for k in ("selected", "legend", "titles", "lines")} == {
        k: want[k] for k in ("selected", "legend", "titles", "lines")
    }, (
        f"first visible frame after restart: {first}; url {old_url} -> {new_url}; "
        f"gateway page lines: {tether.page_lines()}"
    )
    assert '"alpha, gamma"' in pulled, "the document the browser pulled has no restored plot"
    assert checked_rows(page) == PICK_A
    wait_for_plot(page, PICK_A, timeout=10_000)
    shot(page, "04-restart")
    assert shown(page) == want
    story.session_a = session_id(page)


def test_05_independence(new_context, user_a, tether):
    """A second browser context has another identity and the default state; its changes do
    not reach the first user."""
    ctx_b = new_context("B")
    page_b = open_catalog(ctx_b, tether.url)
    first_b = first_state(page_b)
    cb = cookie(ctx_b)
    assert cb is not None and cb["httpOnly"]
    assert cb["value"] != cookie(user_a)["value"], "B was given A's identity"
    assert session_id(page_b) != session_id(story.page_a)
    assert first_b == DEFAULT, f"B's first frame is not the default state: {first_b}"
    assert checked_rows(page_b) == []
    select_and_plot(page_b, PICK_B)
    shot(page_b, "05-independence-b")
    assert shown(page_b) == expect_plot(PICK_B)
    # A's open tab is untouched, and so is a tab A opens now.
    assert shown(story.page_a) == expect_plot(PICK_A)
    story.page_a.close()
    page_a = open_catalog(user_a, tether.url)
    story.page_a = page_a
    wait_for_plot(page_a, PICK_A, timeout=10_000)
    shot(page_a, "05-independence-a")
    assert shown(page_a) == expect_plot(PICK_A)


# -- three more ---------------------------------------------------------------------------------
def test_06_reload_while_connected(user_a, tether):
    """Reload a page whose websocket is open, change the selection and plot again, reload
    again: each reload shows the latest state, from its first visible frame."""
    page = story.page_a
    assert any(not ws.is_closed() for ws in page.websockets), "no open websocket before reload"
    sessions = [session_id(page)]
    page.reload(wait_until="domcontentloaded")
    wait_rendered(page)
    sessions.append(session_id(page))
    first = first_state(page)
    shot(page, "06-reload")
    assert first == {k: expect_plot(PICK_A)[k] for k in first}, (
        f"first frame after reload: {first}; gateway page lines: {tether.page_lines()[-1:]}"
    )
    wait_for_plot(page, PICK_A, timeout=10_000)
    assert shown(page) == expect_plot(PICK_A)

    # A change after the reload, then another reload: the change must still be there.
    page.locator(".tabulator-row", has_text="beta").locator("input[type=checkbox]").click()
    page.wait_for_function("() => window.__tetherState().selected.length === 3")
    page.get_by_role("button", name="Plot").click()
    wait_for_plot(page, PICK_A3)
    assert shown(page) == expect_plot(PICK_A3)
    page.reload(wait_until="domcontentloaded")
    wait_rendered(page)
    sessions.append(session_id(page))
    first = first_state(page)
    shot(page, "06-reload-after-change")
    assert first == {k: expect_plot(PICK_A3)[k] for k in first}, (
        f"a reload lost the change made before it. First frame: {first}; sessions "
        f"(before, after reload 1, after reload 2): {[s[:8] for s in sessions]}; "
        f"gateway page lines: {tether.page_lines()[-2:]}"
    )
    wait_for_plot(page, PICK_A3, timeout=10_000)
    assert shown(page) == expect_plot(PICK_A3)


def test_07_network_drop(new_context, tether):
    """The network drops for a few seconds under an open page (the gateway is not told).
    The app does not auto-reconnect (Panel's default, reconnect=False), so the user reloads:
    the page shows the same selection and plot, and responds to clicks again."""
    ctx = new_context("C")
    page = ctx.new_page()
    net = {"down": False, "links": []}

    def route(ws):  # every websocket of this page goes through here
        if net["down"]:
            ws.close(code=4000, reason="network down")  # a reconnect attempt fails
            return
        net["links"].append((ws, ws.connect_to_server()))

    page.route_web_socket(re.compile(r".*/catalog/ws(\?.*)?$"), route)
    page.goto(tether.url, wait_until="domcontentloaded")
    wait_rendered(page)
    select_and_plot(page, PICK_B)
    assert shown(page) == expect_plot(PICK_B)
    links_before = len(net["links"])
    assert links_before == 1, net["links"]

    # The drop: the page loses its socket; the gateway side stays open, as with a dead
    # link. Reconnect attempts during the outage fail.
    net["down"] = True
    net["links"][-1][0].close(code=4001, reason="network dropped")
    page.wait_for_timeout(4_000)
    net["down"] = False
    page.wait_for_timeout(3_000)  # BokehJS would retry within this if it were enabled
    reconnected = len(net["links"]) > links_before
    shot(page, "07-network-drop")
    assert shown(page) == expect_plot(PICK_B), "the page changed while disconnected"

    page.reload(wait_until="domcontentloaded")
    wait_rendered(page)
    first = first_state(page)
    shot(page, "07-network-drop-reloaded")
    assert first == {k: expect_plot(PICK_B)[k] for k in first}, (
        f"first frame after the network came back and the user reloaded: {first} "
        f"(BokehJS reconnected by itself: {reconnected}); "
        f"gateway page lines: {tether.page_lines()[-1:]}"
    )
    wait_for_plot(page, PICK_B, timeout=10_000)
    assert shown(page) == expect_plot(PICK_B)
    # The new connection is live: untick delta, plot again.
    page.locator(".tabulator-row", has_text="delta").locator("input[type=checkbox]").click()
    page.wait_for_function("() => window.__tetherState().selected.length === 1")
    page.get_by_role("button", name="Plot").click()
    page.wait_for_function("() => { const s = window.__tetherState(); return s.lines === 1 && s.titles.includes('beta'); }")
    shot(page, "07-network-drop-live")
    assert checked_rows(page) == ["beta"]


def test_08_forget(user_a, tether):
    """/.tether/forget?app=catalog answers with a fresh page in the default state, and the
    state stays forgotten in a new tab."""
    page = story.page_a
    before = session_id(page)
    resp = page.goto(tether.url.rsplit("/", 1)[0] + "/.tether/forget?app=catalog", wait_until="domcontentloaded")
    assert resp is not None and resp.url == tether.url, f"forget did not land on the app: {resp and resp.url}"
    wait_rendered(page)
    first = first_state(page)
    shot(page, "08-forget")
    assert session_id(page) != before
    assert first == DEFAULT, f"the page after forget is not in the default state: {first}"
    assert shown(page) == {**DEFAULT, "checked": []}
    page.close()
    again = open_catalog(user_a, tether.url)
    story.page_a = again
    shot(again, "08-forget-new-tab")
    assert first_state(again) == DEFAULT
