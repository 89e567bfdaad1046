//! Message framing: turning websocket frames into whole Bokeh messages and back.
//!
//! A message is a header, a metadata and a content text frame, then for each buffer a
//! `{"id": ...}` text frame and a binary frame. Only the header is parsed; every frame is
//! kept as the bytes that arrived, so a relayed message is byte-identical.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::ProtocolError;

/// Bounds on what one message may hold, so a peer cannot make us buffer without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Most buffers one message may declare (Bokeh sends one per binary array).
    pub max_buffers: usize,
    /// Most bytes all frames of one message may add up to.
    pub max_message_bytes: usize,
}

impl Default for MessageLimits {
    /// 64 buffers and 256 MiB: far above what a dashboard sends, low enough to bound memory.
    fn default() -> Self {
        MessageLimits {
            max_buffers: 64,
            max_message_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The parsed header frame of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Unique id of this message; replies name it in their `reqid`.
    pub msgid: String,
    /// `ACK`, `PULL-DOC-REQ`, `PATCH-DOC`, `OK`, ...
    pub msgtype: String,
    /// For a reply, the `msgid` of the request it answers.
    pub reqid: Option<String>,
    /// How many `{"id"}` + binary frame pairs follow the content.
    pub num_buffers: usize,
}

/// The header as it is on the wire.
#[derive(Deserialize)]
struct WireHeader {
    /// See [`Header::msgid`].
    msgid: String,
    /// See [`Header::msgtype`].
    msgtype: String,
    /// See [`Header::reqid`]; `null` counts as absent.
    #[serde(default)]
    reqid: Option<String>,
    /// See [`Header::num_buffers`]; absent means none. Signed so a negative count is
    /// reported as too many rather than as a parse error.
    #[serde(default)]
    num_buffers: Option<i64>,
}

/// The header [`Message::build`] writes, in Bokeh's key order.
#[derive(Serialize)]
struct BuildHeader<'a> {
    /// See [`Header::msgid`].
    msgid: &'a str,
    /// See [`Header::msgtype`].
    msgtype: &'a str,
    /// See [`Header::reqid`].
    #[serde(skip_serializing_if = "Option::is_none")]
    reqid: Option<&'a str>,
}

/// One websocket frame of a message, payload untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// A text frame (header, metadata, content, buffer header). UTF-8 is the
    /// websocket layer's business; this layer keeps the bytes.
    Text(Bytes),
    /// A binary frame (a buffer payload).
    Binary(Bytes),
}

impl Part {
    /// The frame's payload.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Part::Text(b) | Part::Binary(b) => b,
        }
    }
}

/// One whole Bokeh message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The parsed header, for routing decisions.
    pub header: Header,
    /// Every original frame in order (header first), for relaying byte-identical.
    pub parts: Vec<Part>,
}

impl Message {
    /// The content frame's bytes (empty if `parts` was built by hand without one).
    pub fn content(&self) -> &[u8] {
        self.parts.get(2).map(|p| p.bytes().as_ref()).unwrap_or(&[])
    }

    /// The message type from the header.
    pub fn msgtype(&self) -> &str {
        &self.header.msgtype
    }

    /// Total payload bytes of all frames.
    pub fn len_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.bytes().len()).sum()
    }

    /// Build a new message with no buffers (used by replay): header
    /// `{"msgid","msgtype","reqid"?}`, metadata `{}`, then `content`.
    pub fn build(msgtype: &str, msgid: &str, reqid: Option<&str>, content: String) -> Message {
        let header = BuildHeader {
            msgid,
            msgtype,
            reqid,
        };
        // Serialising a struct of strings cannot fail.
        let header_json = serde_json::to_string(&header).unwrap_or_default();
        Message {
            header: Header {
                msgid: msgid.to_owned(),
                msgtype: msgtype.to_owned(),
                reqid: reqid.map(str::to_owned),
                num_buffers: 0,
            },
            parts: vec![
                Part::Text(Bytes::from(header_json)),
                Part::Text(Bytes::from_static(b"{}")),
                Part::Text(Bytes::from(content)),
            ],
        }
    }
}

/// Parse and check a header frame.
fn parse_header(bytes: &[u8], limits: &MessageLimits) -> Result<Header, ProtocolError> {
    let wire: WireHeader =
        serde_json::from_slice(bytes).map_err(|e| ProtocolError::json("message header", e))?;
    let declared = wire.num_buffers.unwrap_or(0);
    let num_buffers = usize::try_from(declared)
        .ok()
        .filter(|n| *n <= limits.max_buffers)
        .ok_or(ProtocolError::TooManyBuffers {
            declared: declared.unsigned_abs(),
            max: limits.max_buffers,
        })?;
    Ok(Header {
        msgid: wire.msgid,
        msgtype: wire.msgtype,
        reqid: wire.reqid,
        num_buffers,
    })
}

/// Check a buffer header frame: a JSON object whose one key is `id`, as Bokeh requires.
fn check_buffer_header(bytes: &[u8]) -> Result<(), ProtocolError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct BufferHeader {
        /// The buffer id the content refers to; only its presence is checked.
        #[allow(dead_code)]
        id: serde_json::Value,
    }
    serde_json::from_slice::<BufferHeader>(bytes)
        .map(|_| ())
        .map_err(|e| ProtocolError::json("buffer header", e))
}

/// Where the assembler is within the current message.
#[derive(Debug)]
enum State {
    /// Waiting for the first frame of a message.
    Header,
    /// Header read; waiting for metadata.
    Metadata,
    /// Metadata read; waiting for content.
    Content,
    /// Waiting for the `{"id"}` frame of the next buffer.
    BufferHeader,
    /// Waiting for the binary frame of the current buffer.
    BufferPayload,
    /// An error happened; nothing more is accepted.
    Poisoned,
}

/// Collects frames until a message is whole. One per connection direction.
#[derive(Debug)]
pub struct Assembler {
    /// Bounds applied to every message.
    limits: MessageLimits,
    /// What the next frame must be.
    state: State,
    /// The current message's header, once read.
    header: Option<Header>,
    /// The current message's frames so far.
    parts: Vec<Part>,
    /// Bytes in `parts`, checked against the limit.
    bytes: usize,
    /// Buffers fully received for the current message.
    buffers_done: usize,
}

impl Assembler {
    /// A fresh assembler, expecting a header frame.
    pub fn new(limits: MessageLimits) -> Self {
        Assembler {
            limits,
            state: State::Header,
            header: None,
            parts: Vec::new(),
            bytes: 0,
            buffers_done: 0,
        }
    }

    /// Whether it is between messages (nothing of one held).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Header)
    }

    /// The bounds this assembler applies.
    pub fn limits(&self) -> MessageLimits {
        self.limits
    }

    /// Feed one frame. Returns the message when this frame completes it. After an
    /// error the assembler stays poisoned and every later call fails.
    pub fn push(&mut self, part: Part) -> Result<Option<Message>, ProtocolError> {
        match self.step(part) {
            Ok(done) => Ok(done),
            Err(e) => {
                self.state = State::Poisoned;
                self.parts = Vec::new();
                self.header = None;
                Err(e)
            }
        }
    }

    /// The state machine proper; `push` poisons on error.
    fn step(&mut self, part: Part) -> Result<Option<Message>, ProtocolError> {
        let len = part.bytes().len();
        if self.bytes.saturating_add(len) > self.limits.max_message_bytes {
            return Err(ProtocolError::TooLarge {
                max: self.limits.max_message_bytes,
            });
        }
        match (&self.state, &part) {
            (State::Poisoned, _) => return Err(ProtocolError::Poisoned),
            (State::Header, Part::Text(b)) => {
                let header = parse_header(b, &self.limits)?;
                self.parts.reserve(3 + 2 * header.num_buffers);
                self.header = Some(header);
                self.state = State::Metadata;
            }
            (State::Metadata, Part::Text(_)) => self.state = State::Content,
            (State::Content, Part::Text(_)) => self.state = State::BufferHeader,
            (State::BufferHeader, Part::Text(b)) => {
                check_buffer_header(b)?;
                self.state = State::BufferPayload;
            }
            (State::BufferPayload, Part::Binary(_)) => {
                self.buffers_done += 1;
                self.state = State::BufferHeader;
            }
            (State::BufferPayload, Part::Text(_)) => return Err(ProtocolError::ExpectedBinary),
            (state, Part::Binary(_)) => return Err(ProtocolError::ExpectedText(state_name(state))),
        }
        self.bytes += len;
        self.parts.push(part);
        let complete = matches!(self.state, State::BufferHeader)
            && self
                .header
                .as_ref()
                .is_some_and(|h| h.num_buffers == self.buffers_done);
        if !complete {
            return Ok(None);
        }
        let header = self.header.take().ok_or(ProtocolError::Poisoned)?;
        let parts = std::mem::take(&mut self.parts);
        self.state = State::Header;
        self.bytes = 0;
        self.buffers_done = 0;
        Ok(Some(Message { header, parts }))
    }
}

/// The frame a state waits for, for error messages.
fn state_name(state: &State) -> &'static str {
    match state {
        State::Header => "message header",
        State::Metadata => "metadata",
        State::Content => "content",
        State::BufferHeader => "buffer header",
        State::BufferPayload => "buffer payload",
        State::Poisoned => "(poisoned)",
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
