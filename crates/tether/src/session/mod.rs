//! Live sessions and the traffic of each: the [`registry`] of which worker session belongs to
//! whom, and for one websocket the [`relay`], which reads the worker through one [`wire`]
//! stream, restores a fresh session first ([`restore`]) and records the browser's changes
//! ([`recorder`]).

pub mod budget;
pub mod recorder;
pub mod registry;
pub mod relay;
pub mod restore;
pub mod wire;
