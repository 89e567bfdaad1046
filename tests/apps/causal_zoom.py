"""Test app: a figure rebuilt from scratch whenever the slider moves.

A zoom recorded on the rebuilt figure must land on the figure that is shown, not on the one
the slider's callback throws away.
"""
import panel as pn
from bokeh.plotting import figure

pn.extension()

points = pn.widgets.IntSlider(name="points", start=2, end=20, value=5)


def plot(n):
    fig = figure(height=250, width=400, title=f"{n} points", x_range=(0, n), y_range=(0, n))
    fig.line(list(range(n)), list(range(n)))
    return fig


pn.Column(points, pn.bind(plot, points)).servable(title="tether test causal_zoom")
