"""Test app: a Panel template (VanillaTemplate) with a slider and the output it drives."""
import panel as pn

slider = pn.widgets.IntSlider(name="level", start=0, end=10, value=2)
template = pn.template.VanillaTemplate(title="tether template app")
template.sidebar.append(slider)
template.main.append(pn.bind(lambda v: pn.pane.Markdown(f"level is {v}"), slider))
template.servable()
