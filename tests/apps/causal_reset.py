"""Test app: a Select whose callback replaces another Select's options and value.

A replay that sends the second choice before the first choice's callback has run gets the
second choice overwritten by the callback, as the user never saw.
"""
import panel as pn

pn.extension()

OPTIONS = {"fruit": ["apple", "banana", "cherry"], "veg": ["kale", "leek", "okra"]}

kind = pn.widgets.Select(name="kind", options=list(OPTIONS), value="fruit")
item = pn.widgets.Select(name="item", options=OPTIONS["fruit"], value="apple")


def on_kind(event):
    item.options = OPTIONS[event.new]
    item.value = OPTIONS[event.new][0]


kind.param.watch(on_kind, "value")

chosen = pn.pane.Str(pn.bind(lambda k, i: f"chosen: {k}/{i}", kind, item), name="chosen")

pn.Column(kind, item, chosen).servable(title="tether test causal_reset")
