//! Restoring a fresh worker session: pull its document, send `document_ready`, replay the
//! user's log with paths translated to this session's ids, and wait until the effects arrive.
//!
//! Runs on the browser's own worker connection before any frame is relayed, so the document
//! the browser pulls afterwards already shows the restored widgets and re-drawn outputs.

use std::time::Duration;

use futures_util::{Sink, Stream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::wire::{FromWorker, QuickAck, WorkerStream, OWN_MSGID_PREFIX};
use crate::protocol::{Graph, Message, ProtocolError};
use crate::record::{step_message, Entry, Skip};

/// Panel handles widget changes in a 50 ms debounced callback; wait a bit longer than that
/// before each barrier.
const SETTLE_PAUSE: Duration = Duration::from_millis(60);
/// Most barrier rounds in one settle; each round that brings patches earns another.
const SETTLE_ROUNDS: usize = 40;

const DOCUMENT_READY: &str = r#"{"events":[{"kind":"MessageSent","msg_type":"bokeh_event","msg_data":{"type":"event","name":"document_ready","values":{"type":"map"}}}]}"#;
const EMPTY_PATCH: &str = r#"{"events":[]}"#;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the worker connection failed during restore")]
    Socket(#[from] WsError),
    #[error("the worker closed the connection during restore")]
    Closed,
    #[error("the worker sent a message tether cannot read")]
    Unreadable,
    #[error("the worker's document could not be read")]
    Document(#[from] ProtocolError),
    #[error("the worker refused the document request: {0}")]
    Refused(String),
    #[error("the restore reached its time bound")]
    TimedOut,
}

/// What a restore did, for the log line and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Steps the worker accepted.
    pub applied: usize,
    /// Steps skipped: no longer resolvable (the app changed) or refused by the worker.
    pub skipped: usize,
}

/// The restore's side of a worker connection: what it sent and what came back.
pub struct Replayer<'a, U> {
    /// The browser's worker connection, which keeps the session's reference graph.
    stream: &'a mut WorkerStream<U>,
    /// Frames that belong to the browser (the ACK), held until the restore is done.
    pub for_browser: Vec<WsMessage>,
    /// Counter for our own message ids.
    next_id: u64,
    /// Server PATCH-DOCs seen so far; a settle round that adds none ends the settle.
    patches: u64,
    /// Our requests whose replies have not arrived yet, in send order.
    outstanding: Vec<String>,
    /// Steps refused by the worker (ERROR replies).
    refused: usize,
    /// When waiting for the worker stops. Checked only at points where no message is half
    /// sent, so the worker never sees a torn message.
    deadline: Instant,
    /// Progress so far, reported even when the deadline cuts the restore short.
    outcome: Outcome,
}

impl<'a, U> Replayer<'a, U>
where
    U: Stream<Item = Result<WsMessage, WsError>>
        + Sink<WsMessage, Error = WsError>
        + QuickAck
        + Unpin,
{
    pub fn new(stream: &'a mut WorkerStream<U>, deadline: Instant) -> Self {
        Replayer {
            stream,
            for_browser: Vec::new(),
            next_id: 0,
            patches: 0,
            outstanding: Vec::new(),
            refused: 0,
            deadline,
            outcome: Outcome::default(),
        }
    }

    /// Sends one whole message. Never cut short: the deadline is checked before the first
    /// frame, so a message is either not sent or sent whole.
    async fn send(&mut self, msg: &Message) -> Result<(), RestoreError> {
        if Instant::now() >= self.deadline {
            return Err(RestoreError::TimedOut);
        }
        self.stream.send_message(msg).await?;
        self.outstanding.push(msg.header.msgid.clone());
        Ok(())
    }

    fn msgid(&mut self) -> String {
        self.next_id += 1;
        format!("{OWN_MSGID_PREFIX}{}", self.next_id)
    }

    /// Reads one whole message (the stream keeps the graph current); the ACK is kept for
    /// the browser.
    ///
    /// Stops with [`RestoreError::TimedOut`] at the deadline, possibly mid-message: the frames
    /// read so far stay in the stream, which the relay goes on reading.
    async fn read(&mut self) -> Result<Message, RestoreError> {
        loop {
            let next = tokio::time::timeout_at(self.deadline, self.stream.read());
            match next
                .await
                .map_err(|_| RestoreError::TimedOut)?
                .ok_or(RestoreError::Closed)??
            {
                FromWorker::Message { msg, mut frames } => {
                    match msg.msgtype() {
                        "ACK" => self.for_browser.append(&mut frames),
                        "PATCH-DOC" => self.patches += 1,
                        _ => {}
                    }
                    return Ok(msg);
                }
                FromWorker::Unreadable(mut frames) => {
                    // Not ours to drop: the browser gets it as the relay would pass it on.
                    self.for_browser.append(&mut frames);
                    return Err(RestoreError::Unreadable);
                }
                FromWorker::Control(WsMessage::Close(_)) => return Err(RestoreError::Closed),
                FromWorker::Control(_) => {}
            }
        }
    }

    /// Waits for replies to every outstanding request. Returns the last reply's message.
    async fn drain(&mut self) -> Result<Option<Message>, RestoreError> {
        let mut last = None;
        while !self.outstanding.is_empty() {
            let msg = self.read().await?;
            let Some(reqid) = msg.header.reqid.as_deref() else {
                continue;
            };
            if let Some(i) = self.outstanding.iter().position(|id| id == reqid) {
                self.outstanding.remove(i);
                if msg.msgtype() == "ERROR" {
                    self.refused += 1;
                    tracing::debug!(
                        error = %String::from_utf8_lossy(msg.content()),
                        "worker refused a replay step"
                    );
                }
                last = Some(msg);
            }
        }
        Ok(last)
    }

    async fn request(&mut self, msgtype: &str, content: &str) -> Result<Message, RestoreError> {
        let id = self.msgid();
        self.send(&Message::build(msgtype, &id, None, content.to_owned()))
            .await?;
        self.drain().await?.ok_or(RestoreError::Closed)
    }

    /// Waits until the session is quiet: barrier round trips until one brings no new patch.
    ///
    /// Panel applies widget changes in a debounced callback and writes its patches outside the
    /// document lock, so an `OK` alone does not mean the effects have arrived.
    pub async fn settle(&mut self) -> Result<(), RestoreError> {
        self.drain().await?;
        for _ in 0..SETTLE_ROUNDS {
            let before = self.patches;
            tokio::time::sleep_until(self.deadline.min(Instant::now() + SETTLE_PAUSE)).await;
            self.request("PATCH-DOC", EMPTY_PATCH).await?;
            if self.patches == before {
                break;
            }
        }
        Ok(())
    }

    /// Pulls the document, sends `document_ready`, replays `entries`, and settles.
    pub async fn run(&mut self, entries: &[Entry]) -> Result<(), RestoreError> {
        // The worker reads nothing until it has made the session and said ACK.
        while self.read().await?.msgtype() != "ACK" {}
        let reply = self.request("PULL-DOC-REQ", "{}").await?;
        if reply.msgtype() != "PULL-DOC-REPLY" {
            return Err(RestoreError::Refused(
                String::from_utf8_lossy(reply.content()).into_owned(),
            ));
        }
        if self.stream.graph_mut().is_none() {
            // The stream logged it; this says why.
            Graph::from_pull_reply(reply.content())?;
        }
        // Panel runs onload callbacks and releases held events on the first document_ready.
        self.request("PATCH-DOC", DOCUMENT_READY).await?;
        for entry in entries {
            match self.translate(entry) {
                Ok(msg) => {
                    self.send(&msg).await?;
                    self.outcome.applied += 1;
                }
                Err(Skip::PathUnresolved { .. }) | Err(Skip::RefUnresolved { .. }) => {
                    // Perhaps an earlier step creates it (a plot drawn by a click): let the
                    // earlier steps take effect, then try once more.
                    self.settle().await?;
                    match self.translate(entry) {
                        Ok(msg) => {
                            self.send(&msg).await?;
                            self.outcome.applied += 1;
                        }
                        Err(skip) => {
                            tracing::debug!(%skip, "replay step skipped");
                            self.outcome.skipped += 1;
                        }
                    }
                }
                Err(skip) => {
                    tracing::debug!(%skip, "replay step skipped");
                    self.outcome.skipped += 1;
                }
            }
        }
        self.settle().await
    }

    /// The outcome so far, counting steps the worker refused as skipped.
    fn outcome(&self) -> Outcome {
        let o = self.outcome;
        let refused = self.refused.min(o.applied);
        Outcome {
            applied: o.applied - refused,
            skipped: o.skipped + refused,
        }
    }

    fn translate(&mut self, entry: &Entry) -> Result<Message, Skip> {
        let id = self.msgid();
        let graph = self.stream.graph_mut().expect("pulled before replay");
        let msg = step_message(graph, entry, &id)?;
        // Our own change is not echoed back, so apply it to the graph as the browser would.
        if let Err(e) = graph.apply_patch(msg.content()) {
            tracing::debug!(error = %e, "replay step not understood by the graph");
        }
        Ok(msg)
    }
}

/// What a restore did, and what it owes the browser.
pub struct Restored {
    /// `Ok` also when the time bound cut it short (that is logged here).
    pub result: Result<Outcome, RestoreError>,
    /// Frames owed to the browser (its ACK).
    pub for_browser: Vec<WsMessage>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Runs a restore with a time bound, logging one line if the bound cuts it short.
///
/// The bound only ever stops the restore between messages it sends; a worker message it is
/// reading stays half read in `stream`, whose next reader (the relay) finishes it.
pub async fn restore<U>(
    stream: &mut WorkerStream<U>,
    entries: &[Entry],
    bound: Duration,
) -> Restored
where
    U: Stream<Item = Result<WsMessage, WsError>>
        + Sink<WsMessage, Error = WsError>
        + QuickAck
        + Unpin,
{
    let started = Instant::now();
    // Replies are awaited one after another here: acknowledge every frame at once.
    stream.set_ack_every_frame(true);
    let mut r = Replayer::new(stream, started + bound);
    let result = match r.run(entries).await {
        Ok(()) => Ok(r.outcome()),
        Err(RestoreError::TimedOut) => {
            tracing::warn!(
                ?bound,
                "restore hit its time bound; showing the session as it is"
            );
            Ok(r.outcome())
        }
        Err(e) => Err(e),
    };
    let for_browser = std::mem::take(&mut r.for_browser);
    stream.set_ack_every_frame(false);
    Restored {
        result,
        for_browser,
        elapsed: started.elapsed(),
    }
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;
