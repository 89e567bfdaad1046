//! tether: a session gateway in front of Panel and Bokeh workers.
//!
//! `server::run` is the entry point used both by `main` and by the tests.

pub mod protocol;
pub mod record;
pub mod store;
