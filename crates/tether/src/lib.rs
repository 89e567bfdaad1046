//! tether: a session gateway in front of Panel and Bokeh workers.
//!
//! The modules, from the bottom layer up (each imports only those below it):
//! - [`protocol`]: the Bokeh wire format and the document's reference graph, pure;
//! - [`store`]: durable snapshots (SQLite, Redis) and the batching writer;
//! - [`record`]: state logs, recorded by structural path and turned back into steps, pure;
//! - [`config`], [`metrics`], [`tls`]: settings, counters, and the TLS files;
//! - [`auth`]: the secret, the identity cookie, session ids and tokens;
//! - [`state`]: users' histories in memory, loaded from and saved to the store;
//! - [`workers`]: the supervised `panel serve` processes;
//! - [`session`]: the live-session registry, and per websocket the relay, restore and recording;
//! - [`gateway`]: the handles every request shares;
//! - [`http`]: the router and its handlers;
//! - [`serve`]: start-up, the accept loop and the drain; `main` calls [`serve::run`].
//!
//! ARCHITECTURE.md draws the data path.

pub mod auth;
pub mod config;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod record;
pub mod serve;
pub mod session;
pub mod state;
pub mod store;
pub mod tls;
pub mod workers;
