"""Test app: a button whose callback reads a widget the user changed just before.

Before Panel 1.8.4 a click reaches Python before a widget change sent just ahead of it (the
change waits for a 50 ms debounce), so a replay sent back to back summarises nothing.
"""
import panel as pn

pn.extension()

picks = pn.widgets.MultiSelect(name="picks", options=["a", "b", "c", "d"], value=[])
summarize = pn.widgets.Button(name="Summarize")
summary = pn.pane.Markdown("summary: none yet", name="summary")


def on_click(event):
    summary.object = "summary: " + (",".join(picks.value) or "empty")


summarize.on_click(on_click)

pn.Column(picks, summarize, summary).servable(title="tether test causal_click")
