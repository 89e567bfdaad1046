"""Test app: every session holds 16 MiB of its own, so a worker's memory grows with its
sessions as a heavy app's does (a loaded DataFrame per user, say).

A Slider updates a Div; the session's module, and so its ballast, lives as long as the
slider's callback does.
"""
import os

from bokeh.io import curdoc
from bokeh.layouts import column
from bokeh.models import Div, Slider

# Random bytes, so every page is really resident (zeros could be left unmapped).
ballast = os.urandom(16 << 20)
slider = Slider(name="slider", title="value", start=0, end=10, step=1, value=2)
div = Div(name="div", text="")


def render():
    div.text = f"value={slider.value} held={len(ballast) >> 20} MiB"


slider.on_change("value", lambda attr, old, new: render())
render()

curdoc().add_root(column(slider, div, name="layout"))
curdoc().title = "tether test memory_hog"
