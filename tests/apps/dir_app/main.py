"""Test app: a Bokeh directory app (served at /dir_app), as `panel serve dir_app/` serves it,
with its own page template, theme and static file.

A Slider updates a Div through an on_change callback.
"""
from bokeh.io import curdoc
from bokeh.layouts import column
from bokeh.models import Div, Slider

slider = Slider(name="slider", title="value", start=0, end=10, step=1, value=2)
div = Div(name="div", text="")


def render():
    div.text = f"dir value={slider.value}"


slider.on_change("value", lambda attr, old, new: render())
render()

curdoc().add_root(column(slider, div, name="layout"))
curdoc().title = "tether test dir_app"
