//! Restoring a fresh worker session: pull its document, send `document_ready`, replay the
//! user's steps with paths translated to this session's ids, and wait until their effects
//! have arrived.
//!
//! Runs on the browser's own worker connection before any frame is relayed, so the document
//! the browser pulls afterwards already shows the restored widgets and re-drawn outputs.
//!
//! The replay is causal. Each step carries what the worker touched in answer to it when the
//! user made it (`record::causal`). A step is sent at once unless a step still in flight
//! has effects that reach its target (or unknown effects, from an old log): then the steps in
//! flight are first made to *take effect*. Independent changes go out together in one
//! `PATCH-DOC`. Taking effect, checked on Panel 1.4 to 1.9:
//! - a widget change reaches Python in a timer 50 ms after the worker applied it (just before
//!   its `OK`), so the restore waits [`SETTLE_PAUSE`] after the last change's `OK`, or less
//!   when every change in flight has shown again all the effects it had when recorded;
//! - then a barrier, an empty `PATCH-DOC`: the worker handles messages in order under the
//!   document lock, so its `OK` comes after every callback that was due, and their patches;
//! - a step whose recorded effects have not been seen again by then (an async callback) gets
//!   more barriers, up to [`EXTRA_WAIT`].
//!
//! A periodic callback never delays this: nothing waits for the session to be quiet.
//! Before Panel 1.8.4 a click runs before pending widget changes reach Python, so there every
//! event also waits for the changes before it; later versions queue the click themselves.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, Stream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::wire::{FromWorker, WorkerStream, OWN_MSGID_PREFIX};
use crate::protocol::{patch_of, Graph, Message, ProtocolError};
use crate::record::{causal, relocate, step_event, Entry, Moves, Skip, SkipReason, Step};

/// Panel applies a browser's widget change in a timer 50 ms after the worker applied it;
/// waited from the change's `OK`, with a margin.
pub const SETTLE_PAUSE: Duration = Duration::from_millis(60);
/// Longest extra wait, after a barrier, for recorded effects not seen again yet.
pub const EXTRA_WAIT: Duration = Duration::from_millis(500);
/// Most changes sent in one `PATCH-DOC`.
const MAX_BATCH: usize = 32;
/// Most of our messages awaiting the worker's answer; past it, answers are read first.
const MAX_OUTSTANDING: usize = 64;

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

/// How to restore, decided by the gateway.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Longest the restore may take before the session is handed over as it is.
    pub bound: Duration,
    /// Events must wait until the changes before them reached Python (Panel before 1.8.4,
    /// or an unknown version).
    pub events_wait_for_changes: bool,
}

/// What a restore did, for the log line and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Steps applied where the user applied them.
    pub applied: usize,
    /// Steps not applied, by reason, in [`SkipReason::ALL`] order.
    pub skipped: [usize; SkipReason::ALL.len()],
}

impl Outcome {
    /// Steps not applied, in all.
    pub fn skipped_total(&self) -> usize {
        self.skipped.iter().sum()
    }

    /// `reason:count` for each reason that occurred, comma-separated.
    pub fn reasons(&self) -> String {
        SkipReason::ALL
            .iter()
            .filter(|r| self.skipped[r.index()] > 0)
            .map(|r| format!("{}:{}", r.as_str(), self.skipped[r.index()]))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn skip(&mut self, reason: SkipReason) {
        self.skipped[reason.index()] += 1;
    }
}

/// A step sent (or about to be) that has not been seen to take effect.
struct InFlight {
    /// A widget change (which reaches Python only after Panel's debounce), not an event.
    change: bool,
    /// Its recorded effects (`None`: unknown), to decide who depends on it.
    effects: Option<Vec<String>>,
    /// Recorded effects not yet seen again in this session.
    unseen: Vec<String>,
}

/// A change applied, to check at the end that its target is still the model it was sent to.
struct Applied {
    /// Its position in the history.
    index: usize,
    /// The recorded path.
    path: String,
    /// Where it was found in this session.
    now: Arc<str>,
    /// The model it was sent to.
    id: Arc<str>,
}

/// One of our messages awaiting its reply.
struct Outstanding {
    /// Its message id.
    msgid: String,
    /// The history positions of the steps it carries (none for our own requests).
    steps: Vec<usize>,
    /// It carries widget changes.
    changes: bool,
}

/// The restore's side of a worker connection: what it sent and what came back.
pub struct Replayer<'a, U> {
    /// The browser's worker connection, which keeps the session's reference graph.
    stream: &'a mut WorkerStream<U>,
    /// Frames that belong to the browser (the ACK), held until the restore is done.
    pub for_browser: Vec<WsMessage>,
    /// How to restore.
    plan: Plan,
    /// Counter for our own message ids.
    next_id: u64,
    /// Our requests whose replies have not arrived yet, in send order.
    outstanding: Vec<Outstanding>,
    /// When the last reply to a message carrying changes arrived.
    last_change_ok: Option<Instant>,
    /// Steps not yet seen to take effect.
    flight: Vec<InFlight>,
    /// Events of changes resolved but not sent yet, and their history positions.
    batch: Vec<(usize, String)>,
    /// Steps of batches the worker refused, to send again one by one.
    resend: Vec<usize>,
    /// Changes applied so far.
    applied: Vec<Applied>,
    /// Recorded paths found elsewhere in this session (the app was edited).
    moves: Moves,
    /// When waiting for the worker stops. Checked only at points where no message is half
    /// sent, so the worker never sees a torn message.
    deadline: Instant,
    /// Progress so far, reported even when the deadline cuts the restore short.
    outcome: Outcome,
}

impl<'a, U> Replayer<'a, U>
where
    U: Stream<Item = Result<WsMessage, WsError>> + Sink<WsMessage, Error = WsError> + Unpin,
{
    pub fn new(stream: &'a mut WorkerStream<U>, plan: Plan, deadline: Instant) -> Self {
        Replayer {
            stream,
            for_browser: Vec::new(),
            plan,
            next_id: 0,
            outstanding: Vec::new(),
            last_change_ok: None,
            flight: Vec::new(),
            batch: Vec::new(),
            resend: Vec::new(),
            applied: Vec::new(),
            moves: Moves::new(),
            deadline,
            outcome: Outcome::default(),
        }
    }

    fn msgid(&mut self) -> String {
        self.next_id += 1;
        format!("{OWN_MSGID_PREFIX}{}", self.next_id)
    }

    /// Sends one whole message. Never cut short: the deadline is checked before the first
    /// frame, so a message is either not sent or sent whole.
    async fn send(
        &mut self,
        msg: &Message,
        steps: Vec<usize>,
        changes: bool,
    ) -> Result<(), RestoreError> {
        if self.outstanding.len() >= MAX_OUTSTANDING {
            // The worker answers every message, and stops reading ours while its answers wait
            // to be read: read them before sending more, or both sides block on full sockets.
            self.drain_to(MAX_OUTSTANDING / 2).await?;
        }
        if Instant::now() >= self.deadline {
            return Err(RestoreError::TimedOut);
        }
        self.stream.send_message(msg).await?;
        self.outstanding.push(Outstanding {
            msgid: msg.header.msgid.clone(),
            steps,
            changes,
        });
        Ok(())
    }

    /// Reads one whole message (the stream keeps the graph current); the ACK is kept for
    /// the browser, and the effects a patch shows are checked off the steps in flight.
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
                FromWorker::Message {
                    msg,
                    mut frames,
                    touched,
                } => {
                    if msg.msgtype() == "ACK" {
                        self.for_browser.append(&mut frames);
                    }
                    if !touched.is_empty() {
                        let moves = &self.moves;
                        for f in &mut self.flight {
                            f.unseen
                                .retain(|e| !touched.iter().any(|t| seen(&moves.forward(e), t)));
                        }
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
        self.drain_to(0).await
    }

    /// Waits for replies until at most `left` requests are outstanding.
    async fn drain_to(&mut self, left: usize) -> Result<Option<Message>, RestoreError> {
        let mut last = None;
        while self.outstanding.len() > left {
            let msg = self.read().await?;
            let Some(reqid) = msg.header.reqid.as_deref() else {
                continue;
            };
            let Some(i) = self.outstanding.iter().position(|o| o.msgid == reqid) else {
                continue;
            };
            let done = self.outstanding.remove(i);
            if done.changes {
                self.last_change_ok = Some(Instant::now());
            }
            if msg.msgtype() == "ERROR" {
                tracing::debug!(
                    error = %String::from_utf8_lossy(msg.content()),
                    steps = done.steps.len(),
                    "worker refused a replay step"
                );
                match done.steps.as_slice() {
                    [] => {}
                    [one] => self.refused(*one),
                    many => self.resend.extend_from_slice(many),
                }
            }
            last = Some(msg);
        }
        Ok(last)
    }

    /// A step the worker answered with ERROR: not applied.
    fn refused(&mut self, index: usize) {
        self.applied.retain(|a| a.index != index);
        self.outcome.applied = self.outcome.applied.saturating_sub(1);
        self.outcome.skip(SkipReason::Refused);
    }

    async fn request(&mut self, msgtype: &str, content: &str) -> Result<Message, RestoreError> {
        let id = self.msgid();
        self.send(
            &Message::build(msgtype, &id, None, content.to_owned()),
            Vec::new(),
            false,
        )
        .await?;
        self.drain().await?.ok_or(RestoreError::Closed)
    }

    async fn barrier(&mut self) -> Result<(), RestoreError> {
        self.request("PATCH-DOC", EMPTY_PATCH).await.map(drop)
    }

    /// Sends the changes resolved so far, in one `PATCH-DOC`.
    async fn send_batch(&mut self) -> Result<(), RestoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let (steps, events): (Vec<usize>, Vec<String>) =
            std::mem::take(&mut self.batch).into_iter().unzip();
        let id = self.msgid();
        self.send(
            &Message::build("PATCH-DOC", &id, None, patch_of(&events)),
            steps,
            true,
        )
        .await
    }

    /// Makes every step in flight take effect (see the module docs), then forgets them.
    ///
    /// With `reach_python` (an event is next on a Panel that does not queue it, or the page is
    /// about to be handed over) every change must have reached Python, which only its recorded
    /// effects coming back can show sooner than the debounce. Otherwise (a step depends on the
    /// effects of some in flight) only what the steps are known to cause must have arrived.
    async fn settle(&mut self, steps: &[Step], reach_python: bool) -> Result<(), RestoreError> {
        self.send_batch().await?;
        self.drain().await?;
        while !self.resend.is_empty() {
            // A refused batch: its steps one by one, to learn which the worker refuses. Those
            // it had applied before the refusal set the same values again, which changes nothing.
            for index in std::mem::take(&mut self.resend) {
                self.outcome.applied = self.outcome.applied.saturating_sub(1);
                self.applied.retain(|a| a.index != index);
                if let Some(event) = self.resolve(index, &steps[index].entry) {
                    let id = self.msgid();
                    let msg = Message::build("PATCH-DOC", &id, None, patch_of(&[event]));
                    self.send(&msg, vec![index], true).await?;
                }
            }
            self.drain().await?;
        }
        if self.flight.is_empty() {
            return Ok(());
        }
        let began = Instant::now();
        let waiting = self.flight.len();
        if let (true, Some(ok)) = (self.flight.iter().any(|f| f.change), self.last_change_ok) {
            // Until Panel's debounce has surely passed, or, sooner, until every change in
            // flight has shown all the effects it had when recorded (it has reached Python).
            let until = self.deadline.min(ok + SETTLE_PAUSE);
            while !self.arrived(reach_python) && self.read_until(until).await?.is_some() {}
        }
        self.barrier().await?;
        let until = Instant::now() + EXTRA_WAIT;
        while self.flight.iter().any(|f| !f.unseen.is_empty()) && Instant::now() < until {
            tokio::time::sleep_until(self.deadline.min(until).min(Instant::now() + SETTLE_PAUSE))
                .await;
            self.barrier().await?;
        }
        tracing::debug!(
            steps = waiting,
            ms = began.elapsed().as_secs_f64() * 1000.0,
            unseen = self.flight.iter().map(|f| f.unseen.len()).sum::<usize>(),
            "replay steps took effect"
        );
        self.flight.clear();
        Ok(())
    }

    /// Whether the steps in flight have taken effect as far as their recorded effects tell:
    /// every one's were seen again, no change's are unknown, and with `reach_python` every
    /// change showed some (a change known to cause nothing shows nothing, so it must wait
    /// out the debounce).
    fn arrived(&self, reach_python: bool) -> bool {
        self.flight.iter().all(|f| match &f.effects {
            None => !f.change,
            Some(e) => f.unseen.is_empty() && !(reach_python && f.change && e.is_empty()),
        })
    }

    /// Like [`Replayer::read`], but `None` once `until` passes with no whole message.
    async fn read_until(&mut self, until: Instant) -> Result<Option<Message>, RestoreError> {
        match tokio::time::timeout_at(until, self.read()).await {
            Ok(read) => read.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Whether `entry` must wait for the steps in flight to take effect first: `None` when
    /// not; `Some(true)` when the changes in flight must also have reached Python.
    fn must_wait(&self, entry: &Entry) -> Option<bool> {
        let event = matches!(entry, Entry::Event { .. });
        let python =
            event && self.plan.events_wait_for_changes && self.flight.iter().any(|f| f.change);
        let depends = self
            .flight
            .iter()
            .any(|f| causal::depends(entry, f.effects.as_deref()));
        (python || depends).then_some(python)
    }

    /// The step's event in this session's ids, applied to the graph as the browser would
    /// (our own change is not echoed back); `None` (counted) when it cannot be resolved.
    fn resolve(&mut self, index: usize, entry: &Entry) -> Option<String> {
        match self.translate(index, entry) {
            Ok(event) => Some(event),
            Err(skip) => {
                tracing::debug!(%skip, "replay step skipped");
                self.outcome.skip(skip.reason());
                None
            }
        }
    }

    /// The step's event in this session's ids, its target found by path or anchor, applied to
    /// the graph and counted as applied.
    fn translate(&mut self, index: usize, entry: &Entry) -> Result<String, Skip> {
        let graph = self.stream.graph_mut().expect("pulled before replay");
        let here = relocate(graph, &mut self.moves, entry)?;
        let event = step_event(graph, &here)?;
        if let Err(e) = graph.apply_patch(patch_of(std::slice::from_ref(&event)).as_bytes()) {
            tracing::debug!(error = %e, "replay step not understood by the graph");
        }
        self.outcome.applied += 1;
        if let (Entry::Change { path, .. }, Entry::Change { path: now, .. }) = (entry, &*here) {
            if let Some(at) = graph.id_at(now) {
                self.applied.push(Applied {
                    index,
                    path: path.clone(),
                    now: at.path,
                    id: at.id,
                });
            }
        }
        Ok(event)
    }

    /// Finds, before the replay, where the recorded targets that exist already are now, so
    /// effects recorded at moved paths are recognised when they come back.
    fn find_moves(&mut self, steps: &[Step]) {
        let graph = self.stream.graph_mut().expect("pulled before replay");
        for step in steps {
            // Steps that do not resolve yet are tried again when they are replayed.
            let _ = relocate(graph, &mut self.moves, &step.entry);
        }
        if !self.moves.is_empty() {
            tracing::debug!(moves = ?self.moves, "recorded widgets found at new places");
        }
    }

    /// Pulls the document, sends `document_ready`, replays `steps` in causal order, and
    /// waits until they have taken effect.
    pub async fn run(&mut self, steps: &[Step]) -> Result<(), RestoreError> {
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
        // Panel runs onload callbacks and releases held events on the first document_ready;
        // the barrier lets what they scheduled finish first.
        self.request("PATCH-DOC", DOCUMENT_READY).await?;
        self.barrier().await?;
        self.find_moves(steps);
        for (index, step) in steps.iter().enumerate() {
            let entry = &step.entry;
            if let Some(reach_python) = self.must_wait(entry) {
                self.settle(steps, reach_python).await?;
            }
            let event = match self.translate(index, entry) {
                Ok(event) => event,
                Err(
                    Skip::PathUnresolved { .. } | Skip::RefUnresolved { .. } | Skip::Renamed { .. },
                ) if !self.flight.is_empty() => {
                    // Perhaps a step in flight creates it (a plot drawn by a click): let them
                    // take effect, then try once more.
                    self.settle(steps, true).await?;
                    match self.resolve(index, entry) {
                        Some(event) => event,
                        None => continue,
                    }
                }
                Err(skip) => {
                    tracing::debug!(%skip, "replay step skipped");
                    self.outcome.skip(skip.reason());
                    continue;
                }
            };
            let change = matches!(entry, Entry::Change { .. });
            self.flight.push(InFlight {
                change,
                effects: step.effects.clone(),
                unseen: step.effects.clone().unwrap_or_default(),
            });
            if change {
                self.batch.push((index, event));
                if self.batch.len() >= MAX_BATCH {
                    self.send_batch().await?;
                }
            } else {
                self.send_batch().await?;
                let id = self.msgid();
                let msg = Message::build("PATCH-DOC", &id, None, patch_of(&[event]));
                self.send(&msg, vec![index], false).await?;
            }
        }
        // Before the page is handed over everything settles fully, so that a replacement no
        // recording foresaw is still seen and counted.
        self.settle(steps, true).await?;
        self.check_targets(steps);
        Ok(())
    }

    /// A change whose target is no longer the model it was sent to was undone, unless a later
    /// step's recorded effects (or unknown ones) account for the replacement.
    fn check_targets(&mut self, steps: &[Step]) {
        let applied = std::mem::take(&mut self.applied);
        let graph = self.stream.graph_mut().expect("pulled before replay");
        for a in applied {
            if graph.id_at(&a.now).is_some_and(|now| now.id == a.id) {
                continue;
            }
            let foreseen = steps[a.index + 1..].iter().any(|s| {
                s.effects
                    .as_ref()
                    .is_none_or(|e| e.iter().any(|e| causal::reaches(e, &a.path)))
            });
            if !foreseen {
                tracing::debug!(path = %a.path, "replay step undone: its target was replaced");
                self.outcome.applied = self.outcome.applied.saturating_sub(1);
                self.outcome.skip(SkipReason::Replaced);
            }
        }
    }
}

/// A recorded effect `expected` counts as seen when this session touched the same slot, or a
/// slot above it (which replaced what lies below).
fn seen(expected: &str, touched: &str) -> bool {
    causal::at_or_below(expected, touched)
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
pub async fn restore<U>(stream: &mut WorkerStream<U>, steps: &[Step], plan: Plan) -> Restored
where
    U: Stream<Item = Result<WsMessage, WsError>> + Sink<WsMessage, Error = WsError> + Unpin,
{
    let started = Instant::now();
    // Patches are checked against the steps' recorded effects.
    stream.set_watch_effects(true);
    let mut r = Replayer::new(stream, plan, started + plan.bound);
    let result = match r.run(steps).await {
        Ok(()) => Ok(r.outcome),
        Err(RestoreError::TimedOut) => {
            tracing::warn!(
                bound = ?plan.bound,
                "restore hit its time bound; showing the session as it is"
            );
            // Resolved, but never sent.
            r.outcome.applied = r.outcome.applied.saturating_sub(r.batch.len());
            Ok(r.outcome)
        }
        Err(e) => Err(e),
    };
    let for_browser = std::mem::take(&mut r.for_browser);
    stream.set_watch_effects(false);
    Restored {
        result,
        for_browser,
        elapsed: started.elapsed(),
    }
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;
