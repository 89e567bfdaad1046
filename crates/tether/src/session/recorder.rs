//! The recording tap of one connection: the user's changes, read off the browser's frames
//! by structural path, go into their history; and the restore's outcome is told to the log
//! and the metrics.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::registry::Registry;
use super::restore::Restored;
use super::wire::to_part;
use crate::auth::UserId;
use crate::metrics::Metrics;
use crate::protocol::{Assembler, Graph, MessageLimits, ProtocolError};
use crate::record::{record, Entry};
use crate::state::{History, States};

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
        }
    }

    /// The steps to replay into a fresh session: the whole history as it is now.
    pub fn history(&self) -> Vec<Entry> {
        self.log.as_ref().map(History::entries).unwrap_or_default()
    }

    /// Logs a restore's outcome and counts it.
    pub fn restored(&self, restored: &Restored) {
        let (user, app) = (&self.user, &self.app);
        match &restored.result {
            Ok(o) => {
                self.handles.metrics.restored(o.applied, o.skipped);
                tracing::info!(
                    user = %user, app = %app, applied = o.applied, skipped = o.skipped,
                    ms = restored.elapsed.as_millis() as u64, "restored session"
                );
            }
            Err(e) => {
                self.handles.metrics.restored(0, 0);
                tracing::warn!(user = %user, app = %app, error = %e, "restore failed");
            }
        }
    }

    /// Says that a restore of `steps` steps begins.
    pub fn restoring(&self, steps: usize) {
        tracing::info!(user = %self.user, app = %self.app, steps, "restoring session");
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
        let (Some(graph), Some(log)) = (graph, self.log.as_ref()) else {
            return Ok(());
        };
        let h = &self.handles;
        match record(graph, msg.content(), &h.states.policy) {
            Ok(entries) => {
                if entries.is_empty() {
                    return Ok(());
                }
                h.metrics.recorded(entries.len());
                h.registry.recorded(&self.session_id, entries.len());
                h.states.record(&self.user, &self.app, log, entries);
            }
            // The worker will answer with an ERROR; nothing to record.
            Err(e) => tracing::debug!(error = %e, "browser patch not recorded"),
        }
        Ok(())
    }
}
