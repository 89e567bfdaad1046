"""`tether serve --controls`: the corner button a user can see, in a real Chromium.

"Copy share link" gives a link that shows another browser the same view, plot drawn; "Reset this
page" forgets the user's state and starts afresh. The app itself works as without the button.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import serving
from test_login import keep_on_loopback
from test_catalog import (
    DEFAULT,
    PICK_A,
    checked_rows,
    expect_plot,
    open_catalog,
    select_and_plot,
    shot,
    shown,
    state,
    wait_for_plot,
)


@pytest.fixture(scope="module")
def controls_tether(artifacts):
    apps = Path(__file__).resolve().parents[1] / "apps"
    extra = [str(apps / "plain_bokeh.py"), str(apps / "template_app.py")]
    with serving(artifacts, "controls", ["--controls", *extra]) as server:
        yield server


def test_13_controls_share_and_reset(new_context, controls_tether):
    ctx = new_context("controls")
    page = open_catalog(ctx, controls_tether.url)
    share = page.get_by_role("button", name="Copy share link")
    reset = page.get_by_role("button", name="Reset this page")
    share.wait_for(state="visible")
    reset.wait_for(state="visible")
    select_and_plot(page, PICK_A)
    share.click()
    link_out = page.locator("#tether-controls output")
    link_out.filter(has_text="tether-snapshot=").wait_for(timeout=10_000)
    link = link_out.get_attribute("data-link")
    assert link and link.startswith(controls_tether.url.rsplit("/", 1)[0]), link
    shot(page, "13-controls-shared")

    visitor = open_catalog(new_context("controls-visitor"), link)
    wait_for_plot(visitor, PICK_A, timeout=10_000)
    assert shown(visitor) == expect_plot(PICK_A)
    assert "tether-snapshot" not in visitor.url, visitor.url

    reset.click()
    page.wait_for_url(controls_tether.url)
    page.locator(".tabulator-row").nth(3).wait_for(state="visible")
    page.wait_for_function("() => window.__tetherState() !== null")
    assert checked_rows(page) == []
    assert {k: state(page)[k] for k in DEFAULT} == DEFAULT
    shot(page, "13-controls-reset")


def test_14_controls_on_a_plain_bokeh_page(new_context, controls_tether):
    """The same button on a plain Bokeh app (no Panel): the slider still works, and its share
    link shows another browser the moved slider's output."""
    page = new_context("controls-bokeh").new_page()
    page.goto(controls_tether.url.rsplit("/", 1)[0] + "/plain_bokeh", wait_until="domcontentloaded")
    output = page.get_by_text("color=red")
    output.wait_for()
    assert output.inner_text() == "value=2 color=red"
    handle = page.locator(".noUi-handle").first
    handle.focus()
    for _ in range(3):
        handle.press("ArrowRight")
    page.get_by_text("value=5 color=red").wait_for(timeout=10_000)
    page.wait_for_timeout(300)  # recorded within 50 ms; a person takes longer
    page.get_by_role("button", name="Copy share link").click()
    out = page.locator("#tether-controls output")
    out.filter(has_text="tether-snapshot=").wait_for(timeout=10_000)
    shot(page, "14-controls-plain-bokeh")
    visitor = new_context("controls-bokeh-visitor").new_page()
    visitor.goto(out.get_attribute("data-link"), wait_until="domcontentloaded")
    visitor.get_by_text("value=5 color=red").wait_for(timeout=30_000)


def test_15_controls_on_a_panel_template(new_context, controls_tether):
    """On a Panel template the button sits in the corner over the template's own layout, which
    still draws (header and sidebar); the slider still drives its output, and reset restores the
    template's defaults."""
    ctx = new_context("controls-template")
    keep_on_loopback(ctx, [])  # the template's fonts come from a CDN
    page = ctx.new_page()
    page.goto(controls_tether.url.rsplit("/", 1)[0] + "/template_app", wait_until="domcontentloaded")
    page.get_by_text("tether template app").first.wait_for()
    page.get_by_text("level is 2").wait_for()
    handle = page.locator(".noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")
    page.get_by_text("level is 3").wait_for(timeout=10_000)
    share = page.get_by_role("button", name="Copy share link")
    box = share.bounding_box()
    view = page.viewport_size
    assert box["x"] > view["width"] / 2 and box["y"] > view["height"] / 2, box
    shot(page, "15-controls-template")
    page.get_by_role("button", name="Reset this page").click()
    page.get_by_text("level is 2").wait_for(timeout=30_000)
