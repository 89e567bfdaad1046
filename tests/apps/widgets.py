"""Test app: common widgets with stable names and a derived summary.

The summary pane is recomputed from the widget values via pn.bind, so a test
can check that a restored session recomputed the derived output.
"""
import datetime as dt

import panel as pn

pn.extension()

slider = pn.widgets.IntSlider(name="int_slider", start=0, end=10, value=3)
fslider = pn.widgets.FloatSlider(name="float_slider", start=0.0, end=1.0, step=0.05, value=0.5)
select = pn.widgets.Select(name="select", options=["a", "b", "c"], value="a")
multi = pn.widgets.MultiChoice(name="multi_choice", options=["x", "y", "z", "w"], value=["x"])
check = pn.widgets.Checkbox(name="checkbox", value=False)
text = pn.widgets.TextInput(name="text_input", value="hello")
radio = pn.widgets.RadioButtonGroup(name="radio", options=["one", "two", "three"], value="one")
date = pn.widgets.DatePicker(name="date_picker", value=dt.date(2024, 1, 15))
password = pn.widgets.PasswordInput(name="password", value="")


def summary(s, f, sel, m, c, txt, r, d):
    return (
        f"summary: slider={s} float={f:.2f} select={sel} multi={','.join(m)} "
        f"check={c} text={txt} radio={r} date={d.isoformat() if d else None}"
    )


summary_pane = pn.pane.Str(
    pn.bind(summary, slider, fslider, select, multi, check, text, radio, date),
    name="summary",
)

tabs = pn.Tabs(
    ("Numbers", pn.Column(slider, fslider)),
    ("Choices", pn.Column(select, multi, radio, check)),
    ("Text", pn.Column(text, password, date)),
    name="tabs",
)

pn.Column(summary_pane, tabs).servable(title="tether test widgets")
