"""Panel's own login (`panel serve --basic-auth`) through tether, in a real Chromium.

With Panel's auth, an unauthenticated page request is redirected to
`./login?next=<the request URI>`, and the target is kept in a `next_url` cookie. Whatever
tether adds to the URI would reach the browser that way, so the session id tether mints
must travel in a header, never in the query: after the whole login flow, no URL the browser
saw and no cookie it holds carries it.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import Tether
from test_catalog import PICK_A, expect_plot, select_and_plot, session_id, shot, shown, wait_rendered

PASSWORD = "a-shared-password"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def keep_on_loopback(ctx, offsite: list):
    """Panel's login template loads its logo from Panel's CDN. Tests touch loopback only (the
    browser resolves no other name), so such requests are answered here, empty, never sent."""

    def answer(route):
        offsite.append(route.request.url)
        route.fulfill(status=200, body="", content_type="image/png")

    ctx.route(lambda url: urlsplit(url).hostname not in LOOPBACK, answer)


@pytest.fixture(scope="module")
def auth_tether(artifacts):
    workdir = Path(tempfile.mkdtemp(prefix="tether-e2e-auth-"))
    server = Tether(
        workdir,
        artifacts / "tether-auth.log",
        ["--", "--basic-auth", PASSWORD, "--cookie-secret", "e2e-cookie-secret-e2e-cookie-secret"],
    )
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def test_09_login_keeps_the_session_id_out_of_urls_and_cookies(new_context, auth_tether):
    ctx = new_context("login")
    offsite = []
    keep_on_loopback(ctx, offsite)
    page = ctx.new_page()
    seen = []  # every URL requested and every Location answered
    page.on("request", lambda r: seen.append(r.url))
    page.on("response", lambda r: seen.append(r.headers.get("location", "")))
    page.goto(auth_tether.url, wait_until="domcontentloaded")
    page.wait_for_url("**/login**")
    shot(page, "09-login")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", PASSWORD)
    page.locator("button[type=submit], input[type=submit]").first.click()
    page.wait_for_url(auth_tether.url + "*")
    wait_rendered(page)
    sid = session_id(page)
    assert not any("bokeh-session-id" in u or sid in u for u in seen), seen
    for c in ctx.cookies():
        assert sid not in c["value"] and "bokeh-session-id" not in c["value"], c
    # The app works behind the login, and its state survives a reload.
    select_and_plot(page, PICK_A)
    page.reload(wait_until="domcontentloaded")
    wait_rendered(page)
    assert shown(page) == expect_plot(PICK_A)
    shot(page, "09-login-reloaded")
