"""Test app: a Button whose clicks create new models.

Each click updates a counter and appends a new Bokeh figure with a line, so a
replay must recreate models that only exist because of a click.
"""
import panel as pn
from bokeh.plotting import figure

pn.extension()

button = pn.widgets.Button(name="Add plot", button_type="primary")
counter = pn.pane.Markdown("clicked 0 times", name="counter")
plots = pn.Column(name="plots")


def on_click(event):
    n = event.obj.clicks
    counter.object = f"clicked {n} times"
    fig = figure(height=200, width=400, title=f"plot {n}")
    fig.line(list(range(5)), [i * n for i in range(5)], legend_label=f"line {n}")
    plots.append(pn.pane.Bokeh(fig))


button.on_click(on_click)

pn.Column(button, counter, plots).servable(title="tether test button_output")
