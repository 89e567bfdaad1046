"""Benchmark app: a realistic session for the restore benchmark.

Ten widgets with Panel's default 50 ms change debounce, a summary recomputed from all of
them, and a Refresh button whose callback reads them. tether-bench records 30 value changes
over the ten widgets and 3 clicks, with a person's pauses between them, then times the
restore after a restart against a cold page load.
"""
import panel as pn

pn.extension()

sliders = [pn.widgets.IntSlider(name=f"s{i}", start=0, end=100, value=0) for i in range(5)]
selects = [pn.widgets.Select(name=f"c{i}", options=[f"o{k}" for k in range(6)]) for i in range(3)]
texts = [pn.widgets.TextInput(name=f"t{i}", value="") for i in range(2)]
widgets = sliders + selects + texts


def summarize(*values):
    return "summary: " + " ".join(str(v) for v in values)


summary = pn.pane.Str(pn.bind(summarize, *widgets), name="bench_summary")
refresh = pn.widgets.Button(name="bench_refresh")
report = pn.pane.Str("report: none", name="bench_report")


def on_refresh(event):
    report.object = f"report {event.obj.clicks}: " + ",".join(str(w.value) for w in widgets)


refresh.on_click(on_refresh)

pn.Column(*widgets, summary, refresh, report).servable(title="tether bench session")
