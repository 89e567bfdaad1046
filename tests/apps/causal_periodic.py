"""Test app: a chart streamed by a 50 ms periodic callback, beside five widgets.

The session is never quiet: a restore that waits for silence runs to its cap.
"""
import panel as pn
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

pn.extension()

source = ColumnDataSource({"x": [0], "y": [0]})
fig = figure(height=200, width=400, title="live")
fig.line("x", "y", source=source)
ticks = {"n": 0}


def tick():
    ticks["n"] += 1
    source.stream({"x": [ticks["n"]], "y": [ticks["n"] % 7]}, rollover=200)


pn.state.add_periodic_callback(tick, period=50)

widgets = [pn.widgets.IntSlider(name=f"w{i}", start=0, end=10, value=0) for i in range(4)]
word = pn.widgets.TextInput(name="word", value="")


def describe(*values):
    *numbers, text = values
    return "values: " + " ".join(str(n) for n in numbers) + f" word={text}"


shown = pn.pane.Str(pn.bind(describe, *widgets, word), name="shown")

pn.Column(*widgets, word, shown, pn.pane.Bokeh(fig)).servable(title="tether test causal_periodic")
