//! tether: a session gateway in front of Panel and Bokeh workers.
//!
//! `server::run` is the entry point used both by `main` and by the tests.

pub mod bridge;
pub mod config;
pub mod identity;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod record;
pub mod registry;
pub mod restore;
pub mod secret;
pub mod server;
pub mod state;
pub mod store;
pub mod tap;
pub mod token;
pub mod worker;
