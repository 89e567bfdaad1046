//! The relay of one websocket: restore the session first if it is fresh, then pass whole
//! messages both ways, recording the browser's changes, until either side closes.
//!
//! Generic over the two sockets, so that it can be driven by channels in tests.

use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::budget::Held;
use super::recorder::Recorder;
use super::restore::{self, Plan};
use super::wire::{FromWorker, WorkerStream, OWN_MSGID_PREFIX};

/// How often a quiet browser is pinged, so a dead one is noticed within the idle timeout.
const PING_EVERY: Duration = Duration::from_secs(30);

/// After closing a browser for bad input: how long, and how many bytes, to read and discard
/// what it still sends, so that closing the socket with unread data (which sends a reset)
/// does not destroy our close frame before the browser reads it.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 8 << 20;

/// After a tab is told to move, how long its changes already sent may wait for the worker's
/// answer, so they are recorded before the page reloads.
const MOVE_WAIT: Duration = Duration::from_secs(2);

/// The close code that tells tether's page script to reload the page: the app has a new
/// version.
pub const RELOAD_CODE: u16 = 4001;
/// The close code that tells tether's page script (in `--dev`) that the app's new version did
/// not start: it shows why, and reloads once a later version starts.
pub const FAILED_CODE: u16 = 4002;

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Either side went away, or closed normally.
    Closed,
    /// We closed the browser for bad input or silence, with a close frame it has yet to read.
    ClosedByUs,
}

/// Reads and discards what the browser still sends, for a bounded time and size (see
/// [`LINGER_TIME`]), so that our close frame reaches it before the socket is closed.
pub async fn linger(io: &mut (impl tokio::io::AsyncRead + Unpin)) {
    use tokio::io::AsyncReadExt;
    let deadline = Instant::now() + LINGER_TIME;
    let mut scratch = vec![0u8; 16 << 10];
    let mut total = 0;
    while total < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, io.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}

/// Replays the user's history into the fresh session, then hands the browser its ACK.
async fn restore_first<B, U>(
    browser: &mut B,
    worker: &mut WorkerStream<U>,
    recorder: &Recorder,
    plan: Plan,
) -> Result<(), WsError>
where
    B: Sink<Message, Error = WsError> + Unpin,
    U: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let steps = recorder.history();
    recorder.restoring(steps.len());
    let restored = restore::restore(worker, &steps, plan).await;
    recorder.restored(&restored);
    for frame in restored.for_browser {
        browser.feed(frame).await?;
    }
    browser.flush().await
}

/// Restores first when given a restore [`Plan`], then relays until either side closes, or
/// until `moved` resolves: then the changes in flight are answered and recorded, and the
/// browser is closed with the close code it gives ([`RELOAD_CODE`]: the page reloads onto the
/// app's new version; [`FAILED_CODE`]: it shows why the new version did not start).
///
/// `held` is what the browser's socket charges to the gateway's budget for unfinished
/// messages; it is released whenever the browser is between Bokeh messages.
pub async fn run<B, U>(
    browser: &mut B,
    mut worker: WorkerStream<U>,
    mut recorder: Recorder,
    restore: Option<Plan>,
    idle_timeout: Duration,
    held: Option<&Held>,
    moved: impl std::future::Future<Output = u16>,
) -> Ended
where
    B: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
    U: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    if let Some(plan) = restore {
        if let Err(e) = restore_first(browser, &mut worker, &recorder, plan).await {
            tracing::debug!(error = %e, "browser went away during restore");
        }
    }
    let mut last_heard = Instant::now();
    let every = PING_EVERY
        .min(idle_timeout / 3)
        .max(Duration::from_millis(100));
    let mut ended = Ended::Closed;
    let mut ping = tokio::time::interval(every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(moved);
    loop {
        worker.set_watch_effects(recorder.wants_effects());
        tokio::select! {
            msg = browser.next() => match msg {
                Some(Ok(m)) => {
                    last_heard = Instant::now();
                    if let Err(why) = recorder.from_browser(&m, worker.graph_mut()) {
                        tracing::info!(%why, "closing a connection that sent a bad message");
                        close(browser, CloseCode::Protocol, "malformed Bokeh message").await;
                        ended = Ended::ClosedByUs;
                        break;
                    }
                    let more = recorder.mid_message();
                    if !more {
                        if let Some(held) = held { held.release(); }
                    }
                    if is_control(&m) { continue; }
                    if worker.send(m, more).await.is_err() { break; }
                }
                Some(Err(_)) if held.is_some_and(Held::over_budget) => {
                    tracing::warn!("closing a connection past the budget for unfinished messages (--max-buffered-bytes)");
                    close(browser, CloseCode::Size, "gateway buffers full").await;
                    ended = Ended::ClosedByUs;
                    break;
                }
                Some(Err(WsError::Capacity(e))) => {
                    tracing::info!(error = %e, "closing a connection whose message is over the size limit");
                    close(browser, CloseCode::Size, "message too big").await;
                    ended = Ended::ClosedByUs;
                    break;
                }
                _ => break,
            },
            read = worker.read_unobserved() => {
                let (frames, whole) = match read {
                    Some(Ok(FromWorker::Message { msg, frames, .. })) => {
                        let ours = msg
                            .header
                            .reqid
                            .as_deref()
                            .is_some_and(|r| r.starts_with(OWN_MSGID_PREFIX));
                        // A reply to the restore's own request, come late: not the browser's.
                        let frames = if ours { Vec::new() } else { frames };
                        (frames, Some(msg))
                    }
                    Some(Ok(FromWorker::Unreadable(frames))) => (frames, None),
                    Some(Ok(FromWorker::Control(m))) => {
                        if is_control(&m) { continue; }
                        (vec![m], None)
                    }
                    _ => break,
                };
                // The browser first; then the graph and the recording, before anything else
                // is read from either side.
                let mut failed = false;
                for f in frames {
                    if browser.feed(f).await.is_err() { failed = true; break; }
                }
                let failed = failed || browser.flush().await.is_err();
                if let Some(msg) = whole {
                    let touched = worker.observe(&msg);
                    recorder.from_worker(&msg, &touched);
                }
                if failed { break; }
            },
            code = &mut moved, if !recorder.mid_message() => {
                tracing::info!(code, "moving a tab off its worker");
                answer_in_flight(browser, &mut worker, &mut recorder).await;
                let reason = if code == RELOAD_CODE {
                    "tether: the app has a new version"
                } else {
                    "tether: the app's new version did not start"
                };
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                let _ = browser.send(Message::Close(Some(frame))).await;
                ended = Ended::ClosedByUs;
                break;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= idle_timeout {
                    tracing::info!(?idle_timeout, "closing a websocket whose browser stopped answering");
                    close(browser, CloseCode::Away, "idle").await;
                    ended = Ended::ClosedByUs;
                    break;
                }
                if browser.send(Message::Ping(Default::default())).await.is_err() { break; }
            }
        }
    }
    recorder.finish();
    let _ = browser.close().await;
    worker.close().await;
    ended
}

/// Passes the worker's messages on until it has answered every change the browser sent (so
/// each is recorded), for at most [`MOVE_WAIT`].
async fn answer_in_flight<B, U>(
    browser: &mut B,
    worker: &mut WorkerStream<U>,
    recorder: &mut Recorder,
) where
    B: Sink<Message, Error = WsError> + Unpin,
    U: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let until = Instant::now() + MOVE_WAIT;
    while recorder.awaiting_answers() {
        let frames = match tokio::time::timeout_at(until, worker.read()).await {
            Ok(Some(Ok(FromWorker::Message {
                msg,
                frames,
                touched,
            }))) => {
                recorder.from_worker(&msg, &touched);
                frames
            }
            Ok(Some(Ok(FromWorker::Unreadable(frames)))) => frames,
            Ok(Some(Ok(FromWorker::Control(_)))) => continue,
            _ => return,
        };
        for f in frames {
            if browser.feed(f).await.is_err() {
                return;
            }
        }
        if browser.flush().await.is_err() {
            return;
        }
    }
}

async fn close<B>(browser: &mut B, code: CloseCode, reason: &'static str)
where
    B: Sink<Message, Error = WsError> + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = browser.send(Message::Close(Some(frame))).await;
}

/// Pings and pongs are answered by each side's own socket; closes end the loop after relaying.
fn is_control(m: &Message) -> bool {
    matches!(m, Message::Ping(_) | Message::Pong(_) | Message::Frame(_))
}
