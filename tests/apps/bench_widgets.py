"""Benchmark app: a slider whose value is echoed into a text pane, and a button that
counts its clicks.

tether-bench uses it for page loads, widget round trips, CPU per message and restores.
Panel normally applies a browser's widget change in a callback debounced by 50 ms; the
slider here turns that off, so a round trip measures the transport rather than a timer
that every setup would add alike.
"""
import panel as pn

pn.extension()

slider = pn.widgets.IntSlider(name="bench_slider", start=0, end=1_000_000, value=0)
slider._debounce = 0
echo = pn.pane.Str(pn.bind(lambda v: f"value={v}", slider), name="bench_echo")

button = pn.widgets.Button(name="bench_button")
clicks = pn.pane.Str("clicks=0", name="bench_clicks")


def on_click(event):
    clicks.object = f"clicks={event.obj.clicks}"


button.on_click(on_click)

pn.Column(slider, echo, button, clicks).servable(title="tether bench widgets")
