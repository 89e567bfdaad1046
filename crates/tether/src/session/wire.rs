//! The worker side of a connection: the one place its frames are read.
//!
//! [`WorkerStream`] owns the worker socket, the reassembly of the worker's frames into Bokeh
//! messages, and the session's reference graph that those messages keep current. The restore
//! borrows it first, the relay keeps it after, so a message the restore left half read is
//! finished by the relay with nothing handed over. The frame adapter between tungstenite and
//! the protocol layer ([`to_part`], [`to_ws`]) lives here too.

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use crate::protocol::{scan_patch, Assembler, Graph, Message, MessageLimits, Part};
use crate::record::causal;

/// Prefix of the message ids the gateway sends itself; replies to them never reach a browser.
pub const OWN_MSGID_PREFIX: &str = "tether-";

/// The frame as a protocol part; `None` for control frames.
pub fn to_part(m: &WsMessage) -> Option<Part> {
    match m {
        WsMessage::Text(t) => Some(Part::Text(Bytes::from(t.clone()))),
        WsMessage::Binary(b) => Some(Part::Binary(b.clone())),
        _ => None,
    }
}

/// The websocket frame that carries a protocol part.
pub fn to_ws(part: &Part) -> WsMessage {
    match part {
        Part::Text(b) => match std::str::from_utf8(b) {
            Ok(s) => WsMessage::text(s),
            Err(_) => WsMessage::Binary(b.clone()),
        },
        Part::Binary(b) => WsMessage::Binary(b.clone()),
    }
}

/// What [`WorkerStream::read`] got.
#[derive(Debug)]
pub enum FromWorker {
    /// A whole message, and its frames as they arrived (to relay byte for byte).
    Message {
        /// The parsed message.
        msg: Message,
        /// Its frames.
        frames: Vec<WsMessage>,
        /// For a `PATCH-DOC` read while effects are watched, the slots it touched (see
        /// [`causal::touched`]); otherwise empty.
        touched: Vec<String>,
    },
    /// Frames of a message tether cannot read; passed on as they are, never a reason to
    /// break the session.
    Unreadable(Vec<WsMessage>),
    /// A frame outside any message: ping, pong or close.
    Control(WsMessage),
}

/// A worker connection read message by message (see the module docs).
pub struct WorkerStream<U> {
    /// The socket.
    ws: U,
    /// Reassembles the worker's frames into messages.
    asm: Assembler,
    /// Frames of the message in progress. Kept here, not on a stack, so that a read cut
    /// short (by a deadline, or by the relay's other branch) loses nothing.
    held: Vec<WsMessage>,
    /// The session's reference graph, once a document was pulled.
    graph: Option<Graph>,
    /// Report the slots each `PATCH-DOC` touches (costs a path lookup per event).
    watch_effects: bool,
}

impl<U> WorkerStream<U>
where
    U: Stream<Item = Result<WsMessage, WsError>> + Sink<WsMessage, Error = WsError> + Unpin,
{
    /// A stream over a freshly connected worker socket, with a bound on each message.
    pub fn new(ws: U, limits: MessageLimits) -> Self {
        WorkerStream {
            ws,
            asm: Assembler::new(limits),
            held: Vec::new(),
            graph: None,
            watch_effects: false,
        }
    }

    /// See [`WorkerStream::watch_effects`].
    pub fn set_watch_effects(&mut self, on: bool) {
        self.watch_effects = on;
    }

    /// The session's reference graph, once a document was pulled.
    pub fn graph_mut(&mut self) -> Option<&mut Graph> {
        self.graph.as_mut()
    }

    /// Frames of a message read in part and not yet finished.
    pub fn half_read(&self) -> &[WsMessage] {
        &self.held
    }

    /// Reads until a message is whole (or a control frame arrives), keeping the graph
    /// current: a `PULL-DOC-REPLY` builds it, a `PATCH-DOC` updates it. `None` once the
    /// socket has ended.
    ///
    /// Cancel-safe: every frame read is kept in `self` before the next await.
    pub async fn read(&mut self) -> Option<Result<FromWorker, WsError>> {
        let mut read = self.read_unobserved().await;
        if let Some(Ok(FromWorker::Message { msg, touched, .. })) = &mut read {
            *touched = self.observe(msg);
        }
        read
    }

    /// Like [`WorkerStream::read`], but the graph is not updated yet: the caller passes the
    /// frames on first (the browser waits for them, not for tether's bookkeeping) and then
    /// calls [`WorkerStream::observe`] with the message, before it reads anything else from
    /// either side, so the graph is current whenever the browser's next message is read.
    /// `touched` is empty until then.
    pub async fn read_unobserved(&mut self) -> Option<Result<FromWorker, WsError>> {
        loop {
            let m = match self.ws.next().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(e)),
            };
            let Some(part) = to_part(&m) else {
                return Some(Ok(FromWorker::Control(m)));
            };
            self.held.push(m);
            match self.asm.push(part) {
                Ok(None) => {}
                Ok(Some(msg)) => {
                    let frames = std::mem::take(&mut self.held);
                    return Some(Ok(FromWorker::Message {
                        msg,
                        frames,
                        touched: Vec::new(),
                    }));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "worker message not understood");
                    self.asm = Assembler::new(self.asm.limits());
                    return Some(Ok(FromWorker::Unreadable(std::mem::take(&mut self.held))));
                }
            }
        }
    }

    /// Keeps the graph current with a whole worker message; returns the slots a patch
    /// touched, when effects are watched.
    pub fn observe(&mut self, msg: &Message) -> Vec<String> {
        match msg.msgtype() {
            "PULL-DOC-REPLY" => match Graph::from_pull_reply(msg.content()) {
                Ok(g) => self.graph = Some(g),
                Err(e) => tracing::debug!(error = %e, "document not understood"),
            },
            "PATCH-DOC" => {
                let Some(g) = self.graph.as_mut() else {
                    return Vec::new();
                };
                let events = match scan_patch(msg.content()) {
                    Ok(events) => events,
                    Err(e) => {
                        tracing::debug!(error = %e, "patch not understood");
                        return Vec::new();
                    }
                };
                // Read before applying: a slot is named by where its model was.
                let touched = if self.watch_effects {
                    causal::touched(g, &events)
                } else {
                    Vec::new()
                };
                if let Err(e) = g.apply_seen(&events) {
                    tracing::debug!(error = %e, "patch not understood");
                }
                return touched;
            }
            _ => {}
        }
        Vec::new()
    }

    /// Sends one frame from the browser; `more` (frames of its message still to come) only
    /// buffers it, so the frames of one message go out in one write.
    pub async fn send(&mut self, m: WsMessage, more: bool) -> Result<(), WsError> {
        if more {
            self.ws.feed(m).await
        } else {
            self.ws.send(m).await
        }
    }

    /// Sends one whole message of the gateway's own, in one flush.
    pub async fn send_message(&mut self, msg: &Message) -> Result<(), WsError> {
        for part in &msg.parts {
            self.ws.feed(to_ws(part)).await?;
        }
        self.ws.flush().await
    }

    /// Closes the socket.
    pub async fn close(&mut self) {
        let _ = self.ws.close().await;
    }
}
