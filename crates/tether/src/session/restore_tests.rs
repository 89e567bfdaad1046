//! The restore's time bound against a fake worker on channels: where it may stop, and what
//! it hands over to the relay.

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

impl QuickAck for End {}

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
    let restored = restore(&mut stream, &[], bound).await;
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
    let Some(Ok(FromWorker::Message { msg: whole, frames })) = stream.read().await else {
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
    let restored = restore(&mut stream, &[], Duration::from_millis(150)).await;
    fake.await.unwrap();
    assert!(restored.result.is_ok());
    assert!(
        stream.graph_mut().is_some(),
        "the document was pulled before the bound"
    );
    assert!(stream.half_read().is_empty());
}
