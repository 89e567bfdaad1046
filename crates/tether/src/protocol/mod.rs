//! The Bokeh wire protocol, with no I/O.
