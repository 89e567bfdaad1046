//! The restore against a fake worker on channels: its time bound (where it may stop, and
//! what it leaves for the relay), and the causal schedule (what waits for what).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};
use tokio::sync::mpsc;

use super::super::wire::{to_part, to_ws};
use super::*;
use crate::protocol::{Assembler, MessageLimits};

/// PULL-DOC-REPLY content captured from a real session.
const PULL: &str = include_str!("../protocol/fixtures/s1_pull_reply.json");

/// One end of an in-memory websocket.
struct End {
    rx: mpsc::UnboundedReceiver<WsMessage>,
    tx: mpsc::UnboundedSender<WsMessage>,
}

fn pair() -> (End, End) {
    let (a_tx, b_rx) = mpsc::unbounded_channel();
    let (b_tx, a_rx) = mpsc::unbounded_channel();
    (End { rx: a_rx, tx: a_tx }, End { rx: b_rx, tx: b_tx })
}

impl Stream for End {
    type Item = Result<WsMessage, WsError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl Sink<WsMessage> for End {
    type Error = WsError;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, m: WsMessage) -> Result<(), WsError> {
        self.tx.send(m).map_err(|_| WsError::ConnectionClosed)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
}

impl End {
    fn send_parts(&self, msg: &Message) {
        for p in &msg.parts {
            self.tx.send(to_ws(p)).unwrap();
        }
    }

    /// Reads one whole message from the other end.
    async fn read(&mut self) -> Message {
        let mut asm = Assembler::new(MessageLimits::default());
        loop {
            let m = self.rx.recv().await.expect("gateway end open");
            if let Some(msg) = asm.push(to_part(&m).expect("data frame")).unwrap() {
                return msg;
            }
        }
    }
}

fn plan(bound: Duration, events_wait_for_changes: bool) -> Plan {
    Plan {
        bound,
        events_wait_for_changes,
    }
}

#[tokio::test]
async fn a_bound_hit_mid_message_hands_the_half_read_message_to_the_relay() {
    let (gateway, mut worker) = pair();
    let fake = tokio::spawn(async move {
        worker.send_parts(&Message::build("ACK", "w1", None, "{}".into()));
        let req = worker.read().await;
        assert_eq!(req.msgtype(), "PULL-DOC-REQ");
        let reply = Message::build("PULL-DOC-REPLY", "w2", Some(&req.header.msgid), PULL.into());
        // Header and metadata now; the content only after the bound has passed.
        worker.tx.send(to_ws(&reply.parts[0])).unwrap();
        worker.tx.send(to_ws(&reply.parts[1])).unwrap();
        (worker, reply)
    });
    let bound = Duration::from_millis(150);
    let mut stream = WorkerStream::new(gateway, MessageLimits::default());
    let restored = restore(&mut stream, &[], plan(bound, true)).await;
    let (worker, reply) = fake.await.unwrap();

    assert_eq!(restored.result.unwrap(), Outcome::default());
    assert!(restored.elapsed >= bound && restored.elapsed < bound * 10);
    // The browser still gets its ACK.
    let ack = restored.for_browser;
    assert_eq!(ack.len(), 3);
    assert!(ack[0].to_text().unwrap().contains("\"ACK\""));
    // The two frames already read are owed to the browser and stay in the stream, which
    // the relay reads next: the next frame from the worker completes the message.
    assert_eq!(
        stream.half_read(),
        [to_ws(&reply.parts[0]), to_ws(&reply.parts[1])]
    );
    worker.tx.send(to_ws(&reply.parts[2])).unwrap();
    let Some(Ok(FromWorker::Message {
        msg: whole, frames, ..
    })) = stream.read().await
    else {
        panic!("the relay reads the rest of the message");
    };
    assert_eq!(whole.msgtype(), "PULL-DOC-REPLY");
    assert_eq!(whole.header.reqid, reply.header.reqid);
    assert_eq!(frames.len(), 3, "every frame of it, for the browser");
}

#[tokio::test]
async fn a_bound_hit_between_messages_hands_over_nothing_and_sends_no_torn_message() {
    let (gateway, mut worker) = pair();
    let fake = tokio::spawn(async move {
        worker.send_parts(&Message::build("ACK", "w1", None, "{}".into()));
        let req = worker.read().await;
        let reply = Message::build("PULL-DOC-REPLY", "w2", Some(&req.header.msgid), PULL.into());
        worker.send_parts(&reply);
        // document_ready; answered only after the bound.
        let ready = worker.read().await;
        assert_eq!(ready.msgtype(), "PATCH-DOC");
        tokio::time::sleep(Duration::from_millis(300)).await;
        worker.send_parts(&Message::build(
            "OK",
            "w3",
            Some(&ready.header.msgid),
            "{}".into(),
        ));
        // Everything the gateway sent after that must be whole messages.
        let mut asm = Assembler::new(MessageLimits::default());
        let mut rest = 0;
        while let Ok(m) = worker.rx.try_recv() {
            rest += 1;
            asm.push(to_part(&m).unwrap()).unwrap();
        }
        assert_eq!(rest % 3, 0, "a torn message reached the worker");
    });
    let mut stream = WorkerStream::new(gateway, MessageLimits::default());
    let restored = restore(&mut stream, &[], plan(Duration::from_millis(150), true)).await;
    fake.await.unwrap();
    assert!(restored.result.is_ok());
    assert!(
        stream.graph_mut().is_some(),
        "the document was pulled before the bound"
    );
    assert!(stream.half_read().is_empty());
}

/// A small document: a Column of Selects `a1` and `b1`, a Button `k1` and a TextInput `t1`.
const DOC: &str = r#"{"doc":{"roots":[{"type":"object","name":"Column","id":"c1","attributes":{"children":[{"type":"object","name":"Select","id":"a1","attributes":{"value":"x"}},{"type":"object","name":"Select","id":"b1","attributes":{"value":"1"}},{"type":"object","name":"Button","id":"k1"},{"type":"object","name":"TextInput","id":"t1"}]}}]}}"#;

fn change(path: &str, type_name: &str, value: serde_json::Value, effects: &[&str]) -> Step {
    Step {
        entry: Entry::Change {
            path: path.into(),
            type_name: type_name.into(),
            anchor: None,
            attr: "value".into(),
            value,
        },
        effects: Some(effects.iter().map(|e| e.to_string()).collect()),
    }
}

fn click(path: &str) -> Step {
    Step {
        entry: Entry::Event {
            name: "button_click".into(),
            path: Some(path.into()),
            type_name: Some("Button".into()),
            anchor: None,
            values: serde_json::json!({"type": "map", "entries": [["model", {"$path": path, "$type": "Button"}]]}),
        },
        effects: Some(Vec::new()),
    }
}

/// What the fake worker received: when, and the content of each message.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(tokio::time::Instant, String)>>>;

/// A worker that answers every request at once and, like Panel, sends `react(content)`'s
/// patch 55 ms after a change that calls for one (Panel's 50 ms debounce).
fn fake_worker(
    mut worker: End,
    react: impl Fn(&str) -> Option<(Duration, String)> + Send + 'static,
) -> Received {
    let received: Received = Default::default();
    let log = received.clone();
    tokio::spawn(async move {
        worker.send_parts(&Message::build("ACK", "w0", None, "{}".into()));
        let mut n = 0;
        loop {
            let mut asm = Assembler::new(MessageLimits::default());
            let msg = loop {
                let Some(m) = worker.rx.recv().await else {
                    return;
                };
                if let Some(msg) = asm.push(to_part(&m).unwrap()).unwrap() {
                    break msg;
                }
            };
            let content = String::from_utf8_lossy(msg.content()).into_owned();
            log.lock()
                .unwrap()
                .push((tokio::time::Instant::now(), content.clone()));
            n += 1;
            let id = format!("w{n}");
            let reqid = Some(msg.header.msgid.as_str());
            let reply = match msg.msgtype() {
                "PULL-DOC-REQ" => Message::build("PULL-DOC-REPLY", &id, reqid, DOC.into()),
                _ => Message::build("OK", &id, reqid, "{}".into()),
            };
            worker.send_parts(&reply);
            if let Some((after, patch)) = react(&content) {
                let tx = worker.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    for p in &Message::build("PATCH-DOC", "wp", None, patch).parts {
                        let _ = tx.send(to_ws(p));
                    }
                });
            }
        }
    });
    received
}

const BARRIER: &str = r#"{"events":[]}"#;

/// The contents received after the pull, `document_ready` and its barrier.
fn steps_received(received: &Received) -> Vec<(tokio::time::Instant, String)> {
    let all = received.lock().unwrap().clone();
    assert_eq!(all[0].1, "{}", "the pull first");
    assert!(all[1].1.contains("document_ready"));
    assert_eq!(all[2].1, BARRIER, "onload callbacks settle first");
    all[3..].to_vec()
}

#[tokio::test(start_paused = true)]
async fn a_step_waits_for_the_callback_of_an_earlier_step_that_reaches_it() {
    let (gateway, worker) = pair();
    // a's callback replaces b's options and value, 55 ms after a changes.
    let received = fake_worker(worker, |content| {
        content.contains("\"a1\"").then(|| {
            (
                Duration::from_millis(55),
                r#"{"events":[{"kind":"ModelChanged","model":{"id":"b1"},"attr":"options","new":["y1","y2"]},{"kind":"ModelChanged","model":{"id":"b1"},"attr":"value","new":"y1"}]}"#.to_owned(),
            )
        })
    });
    let steps = [
        change("r0/children/3", "TextInput", serde_json::json!("hi"), &[]),
        change(
            "r0/children/0",
            "Select",
            serde_json::json!("y"),
            &["r0/children/1/options", "r0/children/1/value"],
        ),
        change("r0/children/1", "Select", serde_json::json!("y2"), &[]),
    ];
    let mut stream = WorkerStream::new(gateway, MessageLimits::default());
    let restored = restore(&mut stream, &steps, plan(Duration::from_secs(10), true)).await;
    let o = restored.result.unwrap();
    assert_eq!((o.applied, o.skipped_total()), (3, 0));
    let got = steps_received(&received);
    // The two independent changes go out together, in one patch.
    assert!(
        got[0].1.contains("\"t1\"") && got[0].1.contains("\"a1\""),
        "{}",
        got[0].1
    );
    // b's change waits until a's callback has run (its effects are back), then a barrier.
    assert_eq!(got[1].1, BARRIER);
    let waited = got[1].0 - got[0].0;
    assert!(waited >= Duration::from_millis(55), "{waited:?}");
    assert!(
        got[2].1.contains("\"b1\"") && got[2].1.contains("y2"),
        "{}",
        got[2].1
    );
    // And it takes effect before the page is handed over.
    assert_eq!(got[3].1, BARRIER);
    assert!(got[3].0 - got[2].0 >= SETTLE_PAUSE);
    assert_eq!(got.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_click_waits_for_earlier_changes_only_where_panel_does_not_queue_it() {
    let steps = [
        change("r0/children/3", "TextInput", serde_json::json!("hi"), &[]),
        click("r0/children/2"),
    ];
    for events_wait in [true, false] {
        let (gateway, worker) = pair();
        let received = fake_worker(worker, |_| None);
        let mut stream = WorkerStream::new(gateway, MessageLimits::default());
        let restored = restore(
            &mut stream,
            &steps,
            plan(Duration::from_secs(10), events_wait),
        )
        .await;
        assert_eq!(restored.result.unwrap().applied, 2);
        let got = steps_received(&received);
        assert!(got[0].1.contains("\"t1\""));
        if events_wait {
            // Panel before 1.8.4 runs a click before pending changes reach Python.
            assert_eq!(got[1].1, BARRIER);
            assert!(got[1].0 - got[0].0 >= SETTLE_PAUSE);
            assert!(got[2].1.contains("button_click"));
            assert_eq!(got[3].1, BARRIER, "the click's own effects");
            assert!(
                got[3].0 - got[2].0 < SETTLE_PAUSE,
                "no debounce after a click"
            );
        } else {
            assert!(
                got[1].1.contains("button_click"),
                "sent at once: {}",
                got[1].1
            );
            assert_eq!(got[2].1, BARRIER);
            assert!(
                got[2].0 - got[0].0 >= SETTLE_PAUSE,
                "the change settles at the end"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_step_whose_target_is_replaced_unforeseen_is_counted_as_skipped() {
    let (gateway, worker) = pair();
    // Changing b makes the app rebuild the column with a new b, which no recorded effect says.
    let received = fake_worker(worker, |content| {
        content.contains("\"b1\"").then(|| {
            (
                Duration::from_millis(55),
                r#"{"events":[{"kind":"ModelChanged","model":{"id":"c1"},"attr":"children","new":[{"id":"a1"},{"type":"object","name":"Select","id":"b2"},{"id":"k1"},{"id":"t1"}]}]}"#.to_owned(),
            )
        })
    });
    let steps = [change(
        "r0/children/1",
        "Select",
        serde_json::json!("2"),
        &[],
    )];
    let mut stream = WorkerStream::new(gateway, MessageLimits::default());
    let o = restore(&mut stream, &steps, plan(Duration::from_secs(10), true))
        .await
        .result
        .unwrap();
    assert_eq!(o.applied, 0);
    assert_eq!(
        o.skipped[SkipReason::Replaced.index()],
        1,
        "{}",
        o.reasons()
    );
    assert_eq!(o.reasons(), "replaced:1");
    assert_eq!(received.lock().unwrap().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_periodic_callback_does_not_hold_the_restore() {
    let (gateway, worker) = pair();
    // Every message gets a stream patch in answer, as a 50 ms periodic callback would send.
    let received = fake_worker(worker, |_| {
        Some((
            Duration::from_millis(1),
            r#"{"events":[{"kind":"ModelChanged","model":{"id":"t1"},"attr":"placeholder","new":"tick"}]}"#.to_owned(),
        ))
    });
    let steps = [change(
        "r0/children/3",
        "TextInput",
        serde_json::json!("hi"),
        &[],
    )];
    let mut stream = WorkerStream::new(gateway, MessageLimits::default());
    let restored = restore(&mut stream, &steps, plan(Duration::from_secs(10), true)).await;
    assert_eq!(restored.result.unwrap().applied, 1);
    assert!(
        restored.elapsed < Duration::from_millis(200),
        "{:?}",
        restored.elapsed
    );
    assert_eq!(
        steps_received(&received).len(),
        2,
        "the change and one barrier"
    );
}

#[tokio::test(start_paused = true)]
async fn a_change_whose_recorded_effects_are_back_needs_no_full_debounce() {
    let (gateway, worker) = pair();
    // An app without Panel's debounce: the echo comes 5 ms after the change.
    let received = fake_worker(worker, |content| {
        content.contains("\"t1\"").then(|| {
            (
                Duration::from_millis(5),
                r#"{"events":[{"kind":"ModelChanged","model":{"id":"b1"},"attr":"value","new":"echo"}]}"#.to_owned(),
            )
        })
    });
    let steps = [change(
        "r0/children/3",
        "TextInput",
        serde_json::json!("hi"),
        &["r0/children/1/value"],
    )];
    let mut stream = WorkerStream::new(gateway, MessageLimits::default());
    let restored = restore(&mut stream, &steps, plan(Duration::from_secs(10), true)).await;
    assert_eq!(restored.result.unwrap().applied, 1);
    let got = steps_received(&received);
    assert_eq!(got[1].1, BARRIER);
    let waited = got[1].0 - got[0].0;
    assert!(waited < SETTLE_PAUSE / 2, "{waited:?}");
}
