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

/// At `--max-sessions`, live sessions are a cache: a new visitor takes the place of the least
/// recently used session no tab holds, whose user is restored at their next visit. Only when
/// every session is connected is a new visitor refused.
#[tokio::test(flavor = "multi_thread")]
async fn at_the_session_cap_idle_sessions_make_room_and_only_connected_ones_refuse() {
    let dir = tempdir();
    let t = Tether::start(
        dir.path(),
        &[app("tests/apps/plain_bokeh.py")],
        &["--max-sessions", "2"],
    );
    // The first user leaves a change behind and closes the tab; the second stays.
    let mut first = Browser::new();
    let mut tab = first.open(&t.base, "plain_bokeh").await;
    let slider = tab.doc.id_of("Slider", "title", "value");
    tab.set(&slider, "value", json!(7)).await;
    tab.close().await;
    let mut second = Browser::new();
    let staying = second.open(&t.base, "plain_bokeh").await;
    // A flood of cookieless page loads is served: each takes the place of an idle session
    // (the first user's, then the flood's own, whose websockets never come).
    for _ in 0..5 {
        let page = Browser::new().get(&t.url("/plain_bokeh"), &[]).await;
        assert_eq!(page.status, 200, "{}", page.html);
    }
    // A third user connects: now both sessions are held by tabs, and a new visitor is refused.
    let mut third = Browser::new();
    let third_tab = third.open(&t.base, "plain_bokeh").await;
    let page = Browser::new().get(&t.url("/plain_bokeh"), &[]).await;
    assert_eq!(page.status, 503);
    assert!(
        page.html.contains("try again in a few minutes"),
        "{}",
        page.html
    );
    assert!(t.wait_log("session limit reached", Duration::from_secs(2)));
    // The first user's session was dropped, not their state: they come back to their 7.
    let tab = first.open(&t.base, "plain_bokeh").await;
    let slider = tab.doc.id_of("Slider", "title", "value");
    assert_eq!(tab.doc.attr(&slider, "value"), json!(7));
    let metrics = common::bokeh::http_get(&t.url("/.tether/metrics"), &[])
        .await
        .2;
    assert!(
        metrics.contains("tether_sessions_refused_total 1"),
        "{metrics}"
    );
    // The first user's idle session, each flood page but the first for the next one, and the
    // last flood page for the third user.
    assert!(
        metrics.contains("tether_sessions_evicted_total{reason=\"session_limit\"} 6"),
        "{metrics}"
    );
    drop((staying, third_tab));
}

/// The head bound is tether's, exactly: below it the worker answers; above it tether says
/// 431, never a 502 from a worker that refuses what tether let through.
#[tokio::test(flavor = "multi_thread")]
async fn the_request_head_limit_is_the_documented_one() {
    let dir = tempdir();
    let t = Tether::start(dir.path(), &[app("tests/apps/plain_bokeh.py")], &[]);
    let status = |kib: usize| {
        let t = &t;
        async move {
            let mut s = TcpStream::connect(addr(t)).await.unwrap();
            // The whole head, request line included, is about `kib` KiB.
            let pad = "a".repeat((kib << 10) - 100);
            let req = format!(
                "GET /plain_bokeh HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {pad}\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let reply = read_to_close(&mut s, Duration::from_secs(30))
                .await
                .unwrap();
            String::from_utf8_lossy(&reply[..reply.len().min(12)]).into_owned()
        }
    };
    assert_eq!(
        status(59).await,
        "HTTP/1.1 200",
        "59 KiB reaches the worker"
    );
    assert_eq!(
        status(61).await,
        "HTTP/1.1 431",
        "61 KiB is over the 60 KiB default"
    );
    assert_eq!(status(100).await, "HTTP/1.1 431", "never a 502");
}

/// Every request form gets an HTTP answer, and the gateway serves on after them.
#[tokio::test(flavor = "multi_thread")]
async fn every_request_form_gets_an_answer() {
    let dir = tempdir();
    let t = Tether::start(dir.path(), &[app("tests/apps/plain_bokeh.py")], &[]);
    for head in [
        "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n",
        "GET http://127.0.0.1/plain_bokeh HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "GET //plain_bokeh HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "DELETE /.tether/forget HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(addr(&t)).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut reply = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut reply))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        let text = String::from_utf8_lossy(&reply[..n]);
        assert!(text.starts_with("HTTP/1.1 "), "{head:?} got {text:?}");
        if head.starts_with("DELETE") {
            assert!(text.starts_with("HTTP/1.1 405"), "{text}");
        }
    }
    let mut b = Browser::new();
    let tab = b.open(&t.base, "plain_bokeh").await;
    assert!(!tab.doc.of_type("Slider").is_empty(), "still serving");
}

/// At `--max-sessions` with every session connected, a returning user with saved state is
/// still restored: only new visitors are refused.
#[tokio::test(flavor = "multi_thread")]
async fn at_the_session_cap_a_returning_user_is_restored() {
    let dir = tempdir();
    let mut t = Tether::start(
        dir.path(),
        &[app("tests/apps/plain_bokeh.py")],
        &["--max-sessions", "2"],
    );
    let mut returning = Browser::new();
    let mut tab = returning.open(&t.base, "plain_bokeh").await;
    let slider = tab.doc.id_of("Slider", "title", "value");
    tab.set(&slider, "value", json!(6)).await;
    tab.close().await;
    t.restart();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(Browser::new().open(&t.base, "plain_bokeh").await);
    }
    assert_eq!(
        Browser::new().get(&t.url("/plain_bokeh"), &[]).await.status,
        503
    );
    let tab = returning.open(&t.base, "plain_bokeh").await;
    let slider = tab.doc.id_of("Slider", "title", "value");
    assert_eq!(tab.doc.attr(&slider, "value"), json!(6));
    drop(held);
}

/// Starts a text frame that announces `len` bytes and sends only `sent` of them.
async fn unfinished_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    len: usize,
    sent: usize,
) {
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_mut() else {
        panic!("plain TCP");
    };
    // FIN + text; masked, 64-bit length; an all-zero mask leaves the payload as it is.
    let mut head = vec![0x81u8, 0x80 | 127];
    head.extend_from_slice(&(len as u64).to_be_bytes());
    head.extend_from_slice(&[0, 0, 0, 0]);
    tcp.write_all(&head).await.unwrap();
    tcp.write_all(&vec![b'x'; sent]).await.unwrap();
    tcp.flush().await.unwrap();
}

/// Unfinished messages over all connections together stay under --max-buffered-bytes: the
/// connection that would go past it is closed with 1009, and nobody else is touched.
#[tokio::test(flavor = "multi_thread")]
async fn unfinished_messages_share_one_budget() {
    let dir = tempdir();
    let t = Tether::start(
        dir.path(),
        &[app("tests/apps/plain_bokeh.py")],
        &[
            "--max-buffered-bytes",
            "300000",
            "--max-message-size",
            "1000000",
        ],
    );
    let metric = || async {
        let text = common::bokeh::http_get(&t.url("/.tether/metrics"), &[])
            .await
            .2;
        text.lines()
            .find_map(|l| l.strip_prefix("tether_buffered_bytes "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap()
    };
    let mut good = Browser::new();
    let mut tab = good.open(&t.base, "plain_bokeh").await;
    let slider = tab.doc.id_of("Slider", "title", "value");

    let (mut a, mut b) = (Browser::new(), Browser::new());
    let mut holder = raw_ws(&t, &mut a, "plain_bokeh").await;
    unfinished_frame(&mut holder, 500_000, 200_000).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric().await < 200_000 {
        assert!(tokio::time::Instant::now() < deadline, "the bytes are held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second one cannot hold as much again: it is closed, 1009.
    let mut second = raw_ws(&t, &mut b, "plain_bokeh").await;
    unfinished_frame(&mut second, 500_000, 200_000).await;
    assert_eq!(close_code(&mut second).await, Some(CloseCode::Size));
    assert!(
        metric().await <= 300_000,
        "the gateway stays under its budget"
    );
    // The well-behaved user is untouched.
    tab.set(&slider, "value", json!(3)).await;
    tab.wait_for("the div", |d| d.text().contains("value=3"))
        .await;
    // Once the holder goes, its bytes are given back.
    drop(holder);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric().await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
