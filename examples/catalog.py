"""tether demo: a small catalog of time series.

Select rows in the table, click Plot, then close the tab or restart the server.
Run with `tether serve examples/catalog.py` (or `panel serve examples/catalog.py`).
This app has no persistence code: tether restores the selection and the plot.
"""
import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

hv.extension("bokeh")
pn.extension("tabulator")

NAMES = ["alpha", "beta", "gamma", "delta"]
DESCRIPTIONS = [
    "slow upward drift",
    "noisy oscillation",
    "random walk",
    "decaying trend",
]
POINTS = 100

rng = np.random.default_rng(42)
t = np.arange(POINTS)
SERIES = {
    "alpha": 0.05 * t + rng.normal(0, 0.5, POINTS),
    "beta": np.sin(t / 8) * 3 + rng.normal(0, 0.8, POINTS),
    "gamma": np.cumsum(rng.normal(0, 1, POINTS)),
    "delta": 10 * np.exp(-t / 30) + rng.normal(0, 0.3, POINTS),
}

catalog = pd.DataFrame(
    {"name": NAMES, "description": DESCRIPTIONS, "points": [POINTS] * len(NAMES)}
)

banner = pn.pane.Markdown(
    "**tether demo:** select rows, click Plot, then close the tab or restart the server.",
    name="banner",
)
table = pn.widgets.Tabulator(
    catalog,
    name="catalog",
    selectable="checkbox",
    show_index=False,
    disabled=True,
    sizing_mode="stretch_width",
)
plot_button = pn.widgets.Button(name="Plot", button_type="primary")
output = pn.Column(pn.pane.Markdown("Select series and click **Plot**."), name="output")


def plot(event):
    names = [catalog["name"].iloc[i] for i in table.selection]
    if not names:
        output[:] = [pn.pane.Markdown("Nothing selected.")]
        return
    curves = [hv.Curve((t, SERIES[n]), "t", "value", label=n) for n in names]
    # The legend (shown for two or more series) and the title both name the series.
    overlay = hv.Overlay(curves).opts(
        hv.opts.Curve(responsive=True, height=350),
        hv.opts.Overlay(title=", ".join(names), legend_position="top_left"),
    )
    output[:] = [pn.pane.HoloViews(overlay, sizing_mode="stretch_width")]


plot_button.on_click(plot)

pn.Column(banner, table, plot_button, output, sizing_mode="stretch_width").servable(
    title="tether demo catalog"
)
