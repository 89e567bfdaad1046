"""Test app: plain Bokeh, no Panel API.

A Slider and a Select update a Div through on_change callbacks.
"""
from bokeh.io import curdoc
from bokeh.layouts import column
from bokeh.models import Div, Select, Slider

slider = Slider(name="slider", title="value", start=0, end=10, step=1, value=2)
select = Select(name="select", title="color", options=["red", "green", "blue"], value="red")
div = Div(name="div", text="")


def render():
    div.text = f"value={slider.value} color={select.value}"


def on_change(attr, old, new):
    render()


slider.on_change("value", on_change)
select.on_change("value", on_change)
render()

curdoc().add_root(column(slider, select, div, name="layout"))
curdoc().title = "tether test plain_bokeh"
