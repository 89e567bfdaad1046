"""Test app (plain Bokeh): a password input whose app listens to Enter.

BokehJS then sends the typed password inside a `value_submit` event, besides `value`.
"""
from bokeh.events import ValueSubmit
from bokeh.io import curdoc
from bokeh.layouts import column
from bokeh.models import Div, PasswordInput, TextInput

password = PasswordInput(title="password")
name = TextInput(title="name", value="")
status = Div(text="submitted 0")
count = {"n": 0}


def on_submit(event):
    count["n"] += 1
    status.text = f"submitted {count['n']}"


password.on_event(ValueSubmit, on_submit)

curdoc().add_root(column(name, password, status))
