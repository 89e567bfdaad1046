//! Durable storage of state logs.
