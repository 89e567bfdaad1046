//! What the bridge sees of one connection's traffic: it keeps the session's reference graph,
//! records the user's changes into their state log, and runs the restore of a fresh session.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use futures_util::{Sink, SinkExt, Stream};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::identity::UserId;
use crate::protocol::{Assembler, Graph, Limits, ProtocolError};
use crate::record::record;
use crate::restore::{self, to_part, OWN_MSGID_PREFIX};
use crate::server::Gateway;
use crate::state::SharedLog;

/// What to do with a frame from the worker.
pub enum Out {
    /// Part of a message still arriving; keep it.
    Hold,
    /// Send these frames to the browser (possibly none, for replies to our own requests).
    Send(Vec<Message>),
}

/// Per-connection observer.
pub struct Tap {
    /// The gateway, for the state logs and metrics.
    gw: Arc<Gateway>,
    /// Whose connection this is.
    user: UserId,
    /// Which app.
    app: String,
    /// The worker session, so the registry knows which session reflects recorded history.
    session_id: String,
    /// The (user, app) history this connection records into; `None` when the store could
    /// not be read, so that a partial history never overwrites the saved one.
    log: Option<SharedLog>,
    /// The worker session is fresh and must be restored before relaying.
    restore: bool,
    /// Ids and paths of this session's models; known once the document is pulled.
    graph: Option<Graph>,
    /// Reassembles browser frames to find PATCH-DOCs.
    from_browser: Assembler,
    /// Reassembles worker frames to follow the graph and filter our own replies.
    from_worker: Assembler,
    /// Worker frames of the message in progress, held until it is complete.
    held: Vec<Message>,
}

impl Tap {
    pub fn new(
        gw: Arc<Gateway>,
        user: UserId,
        app: String,
        session_id: String,
        log: Option<SharedLog>,
        restore: bool,
    ) -> Tap {
        Tap {
            gw,
            user,
            app,
            session_id,
            restore: restore && log.is_some(),
            log,
            graph: None,
            from_browser: Assembler::new(Limits::default()),
            from_worker: Assembler::new(Limits::default()),
            held: Vec::new(),
        }
    }

    pub fn needs_restore(&self) -> bool {
        self.restore
    }

    /// Replays the user's log into the fresh session, then hands the browser its ACK.
    pub async fn restore<U, B>(&mut self, upstream: &mut U, browser: &mut B) -> Result<(), WsError>
    where
        U: Stream<Item = Result<Message, WsError>>
            + Sink<Message, Error = WsError>
            + restore::QuickAck
            + Unpin,
        B: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
    {
        let entries: Vec<_> = match &self.log {
            Some(log) => log
                .lock()
                .expect("log lock")
                .log
                .entries()
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let bound = self.gw.config.replay_timeout;
        tracing::info!(user = %self.user, app = %self.app, steps = entries.len(), "restoring session");
        let restore::Restored {
            result,
            for_browser,
            graph,
            handover,
            elapsed,
        } = restore::restore(upstream, &entries, bound).await;
        self.graph = graph;
        // A restore cut short may have read part of a worker message; the relay finishes it.
        self.from_worker = handover.asm;
        self.held = handover.partial;
        let m = &self.gw.metrics;
        m.restores.fetch_add(1, Relaxed);
        match result {
            Ok(o) => {
                m.steps_applied.fetch_add(o.applied as u64, Relaxed);
                m.steps_skipped.fetch_add(o.skipped as u64, Relaxed);
                tracing::info!(
                    user = %self.user, app = %self.app, applied = o.applied, skipped = o.skipped,
                    ms = elapsed.as_millis() as u64, "restored session"
                );
            }
            Err(e) => {
                tracing::warn!(user = %self.user, app = %self.app, error = %e, "restore failed");
            }
        }
        for frame in for_browser {
            browser.feed(frame).await?;
        }
        browser.flush().await
    }

    /// Observes a browser frame before it is forwarded. An error closes this connection only.
    pub fn from_browser(&mut self, m: &Message) -> Result<(), ProtocolError> {
        let Some(part) = to_part(m) else {
            return Ok(());
        };
        let Some(msg) = self.from_browser.push(part)? else {
            return Ok(());
        };
        if msg.msgtype() != "PATCH-DOC" {
            return Ok(());
        }
        let (Some(graph), Some(log)) = (self.graph.as_mut(), self.log.as_ref()) else {
            return Ok(());
        };
        match record(graph, msg.content(), &self.gw.states.policy) {
            Ok(entries) => {
                if entries.is_empty() {
                    return Ok(());
                }
                self.gw
                    .metrics
                    .changes_recorded
                    .fetch_add(entries.len() as u64, Relaxed);
                self.gw.registry.recorded(&self.session_id, entries.len());
                self.gw.states.record(&self.user, &self.app, log, entries);
            }
            // The worker will answer with an ERROR; nothing to record.
            Err(e) => tracing::debug!(error = %e, "browser patch not recorded"),
        }
        Ok(())
    }

    /// Observes a worker frame and says what reaches the browser.
    pub fn from_worker(&mut self, m: Message) -> Out {
        let Some(part) = to_part(&m) else {
            return Out::Send(vec![m]);
        };
        self.held.push(m);
        match self.from_worker.push(part) {
            Ok(None) => Out::Hold,
            Ok(Some(msg)) => {
                let frames = std::mem::take(&mut self.held);
                match msg.msgtype() {
                    "PULL-DOC-REPLY" => match Graph::from_pull_reply(msg.content()) {
                        Ok(g) => self.graph = Some(g),
                        Err(e) => tracing::debug!(error = %e, "document not understood"),
                    },
                    "PATCH-DOC" => {
                        if let Some(g) = self.graph.as_mut() {
                            if let Err(e) = g.apply_server_patch(msg.content()) {
                                tracing::debug!(error = %e, "patch not understood");
                            }
                        }
                    }
                    _ => {}
                }
                let ours = msg
                    .header
                    .reqid
                    .as_deref()
                    .is_some_and(|r| r.starts_with(OWN_MSGID_PREFIX));
                Out::Send(if ours { Vec::new() } else { frames })
            }
            Err(e) => {
                // Never break a session over a worker message we cannot read: pass it on.
                tracing::debug!(error = %e, "worker message not understood");
                self.from_worker = Assembler::new(Limits::default());
                Out::Send(std::mem::take(&mut self.held))
            }
        }
    }
}
