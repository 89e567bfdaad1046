//! The Bokeh wire protocol, with no I/O: message framing, PATCH-DOC events and the
//! document's reference graph (model ids ↔ structural paths).
//!
//! Everything here works on bytes already read from a websocket and never panics on
//! what a peer sends: malformed input is a [`ProtocolError`].

mod anchor;
pub mod event;
pub mod frame;
pub mod graph;
mod walk;

pub use event::{
    build_patch, event_json, parse_patch, patch_of, scan_patch, BokehEvent, Event, Seen,
};
pub use frame::{Assembler, Header, Message, MessageLimits, Part};
pub use graph::{slot, Graph, ModelAt};

/// Something a peer (browser or worker) sent that does not follow the Bokeh protocol.
///
/// These are the peer's fault; the connection that produced one should be closed.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A binary websocket frame arrived where the protocol puts a JSON text frame.
    #[error("peer sent a binary frame where the {0} text frame belongs")]
    ExpectedText(&'static str),
    /// A text websocket frame arrived where a buffer's binary payload belongs.
    #[error("peer sent a text frame where a buffer's binary payload belongs")]
    ExpectedBinary,
    /// A JSON part of a message could not be parsed.
    #[error("peer sent a malformed {what}")]
    Json {
        /// Which part: "message header", "PATCH-DOC content", ...
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A JSON part parsed but does not have the shape the protocol gives it.
    #[error("peer sent a malformed {what}: {detail}")]
    Shape {
        /// Which part of the message.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The header declares more buffers than [`MessageLimits::max_buffers`].
    #[error("peer declared {declared} buffers in one message; the limit is {max}")]
    TooManyBuffers {
        /// What the header said.
        declared: u64,
        /// The configured limit.
        max: usize,
    },
    /// The frames of one message add up to more than [`MessageLimits::max_message_bytes`].
    #[error("peer sent a message over the limit of {max} bytes")]
    TooLarge {
        /// The configured limit.
        max: usize,
    },
    /// JSON nested deeper than the walker follows.
    #[error("peer sent JSON nested deeper than {0} levels")]
    TooDeep(usize),
    /// The assembler already failed once; the connection must be closed.
    #[error("message assembly already failed on this connection")]
    Poisoned,
}

impl ProtocolError {
    /// A [`ProtocolError::Json`] for the named part.
    pub(crate) fn json(what: &'static str, source: serde_json::Error) -> ProtocolError {
        ProtocolError::Json { what, source }
    }

    /// A [`ProtocolError::Shape`] for the named part.
    pub(crate) fn shape(what: &'static str, detail: impl Into<String>) -> ProtocolError {
        ProtocolError::Shape {
            what,
            detail: detail.into(),
        }
    }
}
