"""Shows what the app can see of the request: cookie names and header names.

tether must never let its identity cookie reach the app (it would end up in the page).
"""
import panel as pn

cookies = sorted(pn.state.cookies or {})
headers = sorted(k.lower() for k in (pn.state.headers or {}))
pn.Column(
    pn.pane.Str("cookies: " + ",".join(cookies), name="cookies"),
    pn.pane.Str("headers: " + ",".join(headers), name="headers"),
).servable()
