//! The recording tap of one connection: the user's changes, read off the browser's frames
//! by structural path, go into their history once the worker accepts them, with what the
//! worker touched in answer; and the restore's outcome is told to the log and the metrics.
//!
//! A browser `PATCH-DOC` is recorded when the worker answers it `OK`; an `ERROR` means it is
//! never recorded. Its *effects* are the slots that the worker's patches touch from the moment
//! the change is sent until the browser's next recorded change (at most [`EFFECTS_WINDOW`]
//! after it): patches caused by a change arrive before its `OK` (plain Bokeh callbacks,
//! clicks) or after it (Panel's debounced widget callbacks).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::registry::Registry;
use super::restore::Restored;
use super::wire::to_part;
use crate::auth::UserId;
use crate::metrics::Metrics;
use crate::protocol::{Assembler, Graph, Message, MessageLimits, ProtocolError};
use crate::record::{causal, record, Step};
use crate::state::{History, States};

/// How long after a change its effects are still collected, when the user does nothing
/// else: bounds what a periodic callback adds to the last step.
pub const EFFECTS_WINDOW: Duration = Duration::from_secs(10);

/// Most browser patches awaiting the worker's answer; past it the oldest is recorded as if
/// answered, so a worker that never answers cannot make the recorder grow.
const MAX_PENDING: usize = 64;

/// The gateway handles a connection's recording uses.
#[derive(Clone)]
pub struct Handles {
    /// Users' histories, and the writer that saves them.
    pub states: Arc<States>,
    /// Told which session reflects the newest history.
    pub registry: Arc<Registry>,
    /// Counts recorded changes and restores.
    pub metrics: Arc<Metrics>,
}

/// The steps of one browser `PATCH-DOC`, waiting for the worker's answer.
struct Pending {
    /// The browser's message id, which the answer names.
    msgid: String,
    /// Its steps, with the effects seen so far.
    steps: Vec<Step>,
}

/// The newest recorded change, whose effects are being collected.
enum Current {
    /// Not answered yet: effects go into its [`Pending`] steps.
    Pending(String),
    /// Recorded: effects are added to these history entries until `until`.
    Recorded { seqs: Vec<u64>, until: Instant },
}

/// Per-connection recorder.
pub struct Recorder {
    /// Whose connection this is.
    user: UserId,
    /// Which app.
    app: String,
    /// The worker session, so the registry knows which session reflects recorded history.
    session_id: String,
    /// The (user, app) history this connection records into; `None` when the store could
    /// not be read, so that a partial history never overwrites the saved one.
    log: Option<History>,
    /// Where recorded changes go.
    handles: Handles,
    /// Reassembles browser frames to find PATCH-DOCs.
    from_browser: Assembler,
    /// Browser patches with steps, awaiting the worker's answer, oldest first.
    pending: VecDeque<Pending>,
    /// The newest change, whose effects are being collected.
    current: Option<Current>,
}

impl Recorder {
    pub fn new(
        user: UserId,
        app: String,
        session_id: String,
        log: Option<History>,
        handles: Handles,
        limits: MessageLimits,
    ) -> Recorder {
        Recorder {
            user,
            app,
            session_id,
            log,
            handles,
            from_browser: Assembler::new(limits),
            pending: VecDeque::new(),
            current: None,
        }
    }

    /// The steps to replay into a fresh session: the whole history as it is now.
    pub fn history(&self) -> Vec<Step> {
        self.log.as_ref().map(History::steps).unwrap_or_default()
    }

    /// Says that a restore of `steps` steps begins.
    pub fn restoring(&self, steps: usize) {
        tracing::info!(user = %self.user, app = %self.app, steps, "restoring session");
    }

    /// Logs a restore's outcome and counts it.
    pub fn restored(&self, restored: &Restored) {
        let (user, app) = (&self.user, &self.app);
        match &restored.result {
            Ok(o) => {
                self.handles.metrics.restored(o.applied, &o.skipped);
                tracing::info!(
                    user = %user, app = %app, applied = o.applied, skipped = o.skipped_total(),
                    reasons = %o.reasons(), ms = restored.elapsed.as_millis() as u64,
                    "restored session"
                );
            }
            Err(e) => {
                self.handles.metrics.restored(0, &Default::default());
                tracing::warn!(user = %user, app = %app, error = %e, "restore failed");
            }
        }
    }

    /// Whether changes the browser sent still wait for the worker's answer.
    pub fn awaiting_answers(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the browser is in the middle of a Bokeh message.
    pub fn mid_message(&self) -> bool {
        !self.from_browser.is_idle()
    }

    /// Whether the worker's patches should be read for effects now.
    pub fn wants_effects(&self) -> bool {
        match &self.current {
            Some(Current::Pending(_)) => true,
            Some(Current::Recorded { until, .. }) => Instant::now() < *until,
            None => false,
        }
    }

    /// Observes a browser frame before it is forwarded. An error closes this connection only.
    ///
    /// `graph` is the session's reference graph, once its document was pulled: changes are
    /// recorded by the paths it knows, and it follows the browser's changes too.
    pub fn from_browser(
        &mut self,
        m: &WsMessage,
        graph: Option<&mut Graph>,
    ) -> Result<(), ProtocolError> {
        let Some(part) = to_part(m) else {
            return Ok(());
        };
        let Some(msg) = self.from_browser.push(part)? else {
            return Ok(());
        };
        if msg.msgtype() != "PATCH-DOC" {
            return Ok(());
        }
        let (Some(graph), Some(_)) = (graph, self.log.as_ref()) else {
            return Ok(());
        };
        let entries = match record(graph, msg.content(), &self.handles.states.policy) {
            Ok(entries) => entries,
            // The worker will answer with an ERROR; nothing to record.
            Err(e) => {
                tracing::debug!(error = %e, "browser patch not recorded");
                return Ok(());
            }
        };
        if entries.is_empty() {
            return Ok(());
        }
        let steps = entries
            .into_iter()
            .map(|entry| Step {
                entry,
                effects: Some(Vec::new()),
            })
            .collect();
        self.current = Some(Current::Pending(msg.header.msgid.clone()));
        self.pending.push_back(Pending {
            msgid: msg.header.msgid,
            steps,
        });
        if self.pending.len() > MAX_PENDING {
            if let Some(oldest) = self.pending.pop_front() {
                self.commit(oldest);
            }
        }
        Ok(())
    }

    /// Observes a whole worker message: an answer to a browser patch records or drops it; a
    /// patch's `touched` slots become the newest change's effects.
    pub fn from_worker(&mut self, msg: &Message, touched: &[String]) {
        match msg.msgtype() {
            "OK" | "ERROR" => {
                let Some(reqid) = msg.header.reqid.as_deref() else {
                    return;
                };
                let Some(i) = self.pending.iter().position(|p| p.msgid == reqid) else {
                    return;
                };
                let Some(answered) = self.pending.remove(i) else {
                    return;
                };
                if msg.msgtype() == "OK" {
                    self.commit(answered);
                } else {
                    tracing::debug!(
                        steps = answered.steps.len(),
                        "the worker refused a browser change; not recorded"
                    );
                    if matches!(&self.current, Some(Current::Pending(id)) if *id == answered.msgid)
                    {
                        self.current = None;
                    }
                }
            }
            "PATCH-DOC" if !touched.is_empty() => self.effects(touched),
            _ => {}
        }
    }

    /// Adds effects to the newest change.
    fn effects(&mut self, touched: &[String]) {
        match &self.current {
            Some(Current::Pending(id)) => {
                if let Some(p) = self.pending.iter_mut().find(|p| p.msgid == *id) {
                    for step in &mut p.steps {
                        causal::merge(step.effects.get_or_insert_with(Vec::new), touched);
                    }
                }
            }
            Some(Current::Recorded { seqs, until }) if Instant::now() < *until => {
                if let Some(log) = &self.log {
                    self.handles
                        .states
                        .add_effects(&self.user, &self.app, log, seqs, touched);
                }
            }
            _ => {}
        }
    }

    /// Writes an answered patch's steps into the history.
    fn commit(&mut self, answered: Pending) {
        let Some(log) = &self.log else {
            return;
        };
        let n = answered.steps.len();
        let h = &self.handles;
        let seqs = h.states.record(&self.user, &self.app, log, answered.steps);
        h.metrics.recorded(n);
        h.registry.recorded(&self.session_id, n);
        if matches!(&self.current, Some(Current::Pending(id)) if *id == answered.msgid) {
            self.current = Some(Current::Recorded {
                seqs,
                until: Instant::now() + EFFECTS_WINDOW,
            });
        }
    }

    /// The connection ended: patches the worker never answered are recorded (it may well
    /// have applied them; only an `ERROR` says it did not).
    pub fn finish(&mut self) {
        while let Some(p) = self.pending.pop_front() {
            self.commit(p);
        }
    }
}
