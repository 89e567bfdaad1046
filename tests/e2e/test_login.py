"""Panel's own login (`panel serve --basic-auth`) through tether, in a real Chromium.

With Panel's auth, an unauthenticated page request is redirected to
`./login?next=<the request URI>`, and the target is kept in a `next_url` cookie. Whatever
tether adds to the URI would reach the browser that way, so the session id tether mints
must travel in a header, never in the query: after the whole login flow, no URL the browser
saw and no cookie it holds carries it.
"""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from conftest import serving
from test_catalog import (
    DEFAULT,
    PICK_A,
    checked_rows,
    expect_plot,
    first_state,
    select_and_plot,
    session_id,
    shot,
    shown,
    wait_for_plot,
    wait_rendered,
)

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
    args = ["--", "--basic-auth", PASSWORD, "--cookie-secret", "e2e-cookie-secret-e2e-cookie-secret"]
    with serving(artifacts, "auth", args) as server:
        yield server


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


def log_in(ctx, url: str, name: str):
    """Opens the app in `ctx` and logs in through Panel's own form as `name`."""
    keep_on_loopback(ctx, [])
    page = ctx.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_url("**/login**")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.locator("button[type=submit], input[type=submit]").first.click()
    page.wait_for_url(url + "*")
    wait_rendered(page)
    return page


def test_09b_a_login_s_state_follows_it_to_another_browser(new_context, auth_tether):
    """Panel's own login names the user: the same login in another browser (no cookie of the
    first) gets a session of its own, restored from the same history with the plot drawn; and
    another login is independent. tether reads the login from the `user` cookie the worker
    signed with `--cookie-secret`, never from what the browser claims."""
    first = log_in(new_context("grace-laptop"), auth_tether.url, "grace")
    select_and_plot(first, PICK_A)
    first.close()
    desk = log_in(new_context("grace-desk"), auth_tether.url, "grace")
    wait_for_plot(desk, PICK_A, timeout=10_000)
    shot(desk, "09b-login-another-browser")
    seen_first = first_state(desk)
    assert {k: seen_first[k] for k in ("selected", "titles")} == {
        "selected": expect_plot(PICK_A)["selected"],
        "titles": expect_plot(PICK_A)["titles"],
    }, seen_first
    assert shown(desk) == expect_plot(PICK_A)
    other = log_in(new_context("bob"), auth_tether.url, "bob")
    assert checked_rows(other) == [] and first_state(other)["titles"] == DEFAULT["titles"]
