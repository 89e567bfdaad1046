//! Who is asking: the gateway's secret and the keys derived from it, the `tether_id`
//! identity cookie, and the Bokeh session ids and tokens that are bound to a (user, app).
//!
//! Pure: no I/O beyond reading or creating the secret file once at start-up.

pub mod identity;
pub mod panel_login;
pub mod secret;
pub mod token;

pub use identity::UserId;
pub use secret::{BokehKey, Keys, Secret, SecretError};
