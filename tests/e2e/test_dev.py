"""`tether serve --dev` in a real Chromium: saving the app reloads the open page by itself, on
the new code, with what the user had set; a save with a syntax error shows the error in the
page and keeps the old code serving, and the next good save brings the page back.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from conftest import serving
from test_catalog import shot


def version(extra: str = "") -> str:
    return (
        "import panel as pn\n"
        "word = pn.widgets.TextInput(name='word')\n"
        "color = pn.widgets.Select(name='color', options=['red', 'green', 'blue'])\n"
        "out = pn.pane.Markdown(pn.bind(lambda w, c: f'word={w} color={c}', word, color))\n"
        f"pn.Column({extra}word, color, out).servable()\n"
    )


@pytest.fixture(scope="module")
def dev_app():
    with tempfile.TemporaryDirectory(prefix="tether-e2e-dev-app-") as d:
        script = Path(d) / "dev_app.py"
        script.write_text(version())
        yield script


@pytest.fixture(scope="module")
def dev_tether(artifacts, dev_app):
    with serving(artifacts, "dev", ["--dev", str(dev_app)]) as server:
        yield server


def test_16_dev_reload_keeps_what_the_user_set(new_context, dev_tether, dev_app):
    page = new_context("dev").new_page()
    url = dev_tether.url.rsplit("/", 1)[0] + "/dev_app"
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_text("word= color=red").wait_for(timeout=20_000)
    field = page.locator("input[type=text]").first
    field.fill("hello")
    field.press("Enter")
    page.locator("select").first.select_option("blue")
    page.get_by_text("word=hello color=blue").wait_for(timeout=10_000)
    page.wait_for_timeout(300)  # recorded within 50 ms; a person takes longer
    # Set on this page only: gone once the page has reloaded itself.
    page.evaluate("() => { window.__beforeEdit = true; }")

    # Insert a widget above the others and save: no one presses reload.
    dev_app.write_text(version("pn.widgets.Button(name='Inserted button'), "))
    page.get_by_role("button", name="Inserted button").wait_for(timeout=30_000)
    assert page.evaluate("() => window.__beforeEdit === undefined"), "the page reloaded itself"
    page.get_by_text("word=hello color=blue").wait_for(timeout=10_000)
    assert page.locator("input[type=text]").first.input_value() == "hello"
    assert page.locator("select").first.input_value() == "blue"
    shot(page, "16-dev-reloaded")

    # A syntax error: the page says so, and the old code keeps serving.
    dev_app.write_text("import panel as pn\npn.Column(\n")
    error = page.locator("[data-tether-error]")
    error.wait_for(timeout=30_000)
    assert "syntax error" in error.inner_text(), error.inner_text()
    shot(page, "16-dev-error")
    assert "did not start" in dev_tether.log_since_start()

    # Fixed: the page comes back by itself, on the new code, with the user's values.
    dev_app.write_text(version("pn.widgets.Button(name='Fixed button'), "))
    page.get_by_role("button", name="Fixed button").wait_for(timeout=30_000)
    page.get_by_text("word=hello color=blue").wait_for(timeout=10_000)
    assert page.locator("[data-tether-error]").count() == 0
    shot(page, "16-dev-fixed")
