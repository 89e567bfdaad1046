//! Bounds: past each one only the offending connection is closed, with the right code,
//! while other users carry on.

mod common;

use std::time::Duration;

use common::{app, tempdir, Browser, Tether};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn addr(t: &Tether) -> String {
    t.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `within` passes); returns what it sent.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// A raw websocket for a real page of `b`, so the test controls every frame.
async fn raw_ws(
    t: &Tether,
    b: &mut Browser,
    name: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let page = b.get(&t.url(&format!("/{name}")), &[]).await;
    let mut req = format!("ws://{}/{name}/ws", addr(t))
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert(
        "sec-websocket-protocol",
        format!("bokeh, {}", page.token.unwrap()).parse().unwrap(),
    );
    h.insert("cookie", b.cookie.clone().unwrap().parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

async fn close_code<S>(ws: &mut S) -> Option<CloseCode>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| f.code),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bound_closes_only_its_own_connection() {
    let dir = tempdir();
    let t = Tether::start(
        dir.path(),
        &[app("tests/apps/plain_bokeh.py")],
        &[
            "--max-message-size",
            "65536",
            "--max-header-size",
            "16384",
            "--handshake-timeout",
            "1s",
            "--idle-timeout",
            "5s",
        ],
    );
    // A well-behaved user, who must be unaffected by everything below.
    let mut good = Browser::new();
    let mut tab = good.open(&t.base, "plain_bokeh").await;
    let slider = tab.doc.id_of("Slider", "title", "value");

    // An oversized message: closed with 1009.
    let mut b = Browser::new();
    let mut ws = raw_ws(&t, &mut b, "plain_bokeh").await;
    let big = format!(
        "{{\"msgid\":\"1\",\"msgtype\":\"PATCH-DOC\",\"pad\":\"{}\"}}",
        "x".repeat(100_000)
    );
    let _ = ws.send(Message::text(big)).await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));

    // A malformed Bokeh message: closed with 1002.
    let mut ws = raw_ws(&t, &mut b, "plain_bokeh").await;
    ws.send(Message::text("this is not json")).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Protocol));
    // A binary frame where a header is expected: also 1002.
    let mut ws = raw_ws(&t, &mut b, "plain_bokeh").await;
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Protocol));

    // An oversized request head: 431, connection closed.
    let mut s = TcpStream::connect(addr(&t)).await.unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let _ = s.write_all(req.as_bytes()).await;
    let reply = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .expect("closed");
    assert!(
        reply.is_empty() || String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    // A client that never finishes its request head: dropped after the handshake timeout.
    let mut slow = TcpStream::connect(addr(&t)).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        read_to_close(&mut slow, Duration::from_secs(10))
            .await
            .is_some(),
        "slow client dropped"
    );

    // The good user carried on throughout.
    tab.set(&slider, "value", json!(5)).await;
    tab.wait_for("div", |d| d.text().contains("value=5")).await;
    tab.close().await;

    // A browser that stops answering pings: closed with 1001 after the idle timeout.
    // Read the raw bytes, so that no pong is ever sent: an unmasked close frame with 1001.
    let mut silent = raw_ws(&t, &mut b, "plain_bokeh").await;
    let raw = match silent.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s,
        _ => unreachable!("loopback is plain TCP"),
    };
    let bytes = read_to_close(raw, Duration::from_secs(20))
        .await
        .expect("closed when idle");
    assert!(
        bytes
            .windows(4)
            .any(|w| w[0] == 0x88 && w[2..] == [0x03, 0xE9]),
        "a close frame with code 1001 (going away)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_cap_refuses_only_the_excess() {
    let dir = tempdir();
    let t = Tether::start(
        dir.path(),
        &[app("tests/apps/plain_bokeh.py")],
        &["--max-connections", "2"],
    );
    let hold1 = TcpStream::connect(addr(&t)).await.unwrap();
    let hold2 = TcpStream::connect(addr(&t)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut third = TcpStream::connect(addr(&t)).await.unwrap();
    let _ = third
        .write_all(b"GET /.tether/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let reply = read_to_close(&mut third, Duration::from_secs(10))
        .await
        .expect("closed");
    assert!(reply.is_empty(), "the excess connection gets nothing");
    drop(hold1);
    drop(hold2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, _) = common::bokeh::http_get(&t.url("/.tether/health"), &[]).await;
    assert_eq!(status, 200, "slots are given back");
    assert!(t.wait_log("connection limit reached", Duration::from_secs(2)));
    let metrics = common::bokeh::http_get(&t.url("/.tether/metrics"), &[])
        .await
        .2;
    assert!(
        metrics.contains("tether_connections_refused_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn session_cap_refuses_only_new_visitors() {
    let dir = tempdir();
    let t = Tether::start(
        dir.path(),
        &[app("tests/apps/plain_bokeh.py")],
        &["--max-sessions", "2"],
    );
    // Two visitors take the two sessions; a flood of cookieless requests makes no more.
    let mut first = Browser::new();
    let tab = first.open(&t.base, "plain_bokeh").await;
    tab.close().await;
    let mut second = Browser::new();
    assert_eq!(second.get(&t.url("/plain_bokeh"), &[]).await.status, 200);
    for _ in 0..5 {
        let page = Browser::new().get(&t.url("/plain_bokeh"), &[]).await;
        assert_eq!(page.status, 503);
        assert!(
            page.html.contains("try again in a few minutes"),
            "{}",
            page.html
        );
    }
    // A visitor who has a session still gets it back.
    let tab = first.open(&t.base, "plain_bokeh").await;
    assert_eq!(tab.doc.of_type("Slider").len(), 1);
    assert!(t.wait_log("session limit reached", Duration::from_secs(2)));
    let metrics = common::bokeh::http_get(&t.url("/.tether/metrics"), &[])
        .await
        .2;
    assert!(
        metrics.contains("tether_sessions_refused_total 5"),
        "{metrics}"
    );
    assert_eq!(
        t.stderr().matches("session limit reached").count(),
        1,
        "logged once"
    );
}
