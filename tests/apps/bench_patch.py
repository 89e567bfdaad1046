"""Benchmark app: setting the `bench_points` input to n makes the server replace a plot's
ColumnDataSource with n points, sent to the browser as one large JSON patch.

Plain Python lists serialise as JSON (numpy arrays would travel as binary buffers), so
150,000 points are about 4 MB of JSON. The debounce is off, as in bench_widgets.py.
"""
import random

import panel as pn
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

pn.extension()

points = pn.widgets.IntInput(name="bench_points", value=0, start=0)
points._debounce = 0
source = ColumnDataSource(data={"x": [], "y": []})
fig = figure(height=300, width=600, title="bench patch")
fig.line("x", "y", source=source)


def regenerate(event):
    rng = random.Random(event.new)
    n = event.new
    source.data = {"x": list(range(n)), "y": [rng.random() for _ in range(n)]}


points.param.watch(regenerate, "value")

pn.Column(points, pn.pane.Bokeh(fig)).servable(title="tether bench patch")
