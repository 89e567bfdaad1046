//! A browser-like client: a cookie jar for HTTP, and tabs that speak the Bokeh protocol.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::doc::Doc;

/// One browser profile: its own cookie jar.
#[derive(Default, Clone)]
pub struct Browser {
    /// `tether_id=...` as last set by the gateway.
    pub cookie: Option<String>,
    /// The raw `Set-Cookie` of the last response that set one.
    pub last_set_cookie: Option<String>,
    /// Headers sent with every request, page and websocket, as an auth proxy in front adds.
    pub headers: Vec<(String, String)>,
}

/// A fetched page.
pub struct Page {
    pub status: u16,
    pub html: String,
    pub headers: http::HeaderMap,
    /// The Bokeh token embedded in the page.
    pub token: Option<String>,
}

impl Page {
    pub fn session_id(&self) -> String {
        session_of(self.token.as_deref().expect("page has a token"))
    }
}

/// The session id inside a token.
pub fn session_of(token: &str) -> String {
    let body = token.split('.').next().unwrap();
    let json: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
    json["session_id"].as_str().unwrap().to_owned()
}

pub async fn http_get(url: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, String) {
    http_request(http::Method::GET, url, headers).await
}

/// A request with no body, by any method.
pub async fn http_request(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(60),
        client.request(req.body(Empty::new()).unwrap()),
    )
    .await
    .expect("page within 60 s")
    .expect("http request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

impl Browser {
    pub fn new() -> Browser {
        Browser::default()
    }

    /// GET with this browser's cookies, following nothing; stores any identity cookie.
    pub async fn get(&mut self, url: &str, extra: &[(&str, &str)]) -> Page {
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        headers.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let cookie = self.cookie.clone();
        if let Some(c) = cookie.as_deref() {
            headers.push(("cookie", c));
        }
        let (status, h, html) = http_get(url, &headers).await;
        if let Some(sc) = h.get("set-cookie").and_then(|v| v.to_str().ok()) {
            self.last_set_cookie = Some(sc.to_owned());
            self.cookie = Some(sc.split(';').next().unwrap().to_owned());
        }
        let token = html
            .split("\"token\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(str::to_owned);
        Page {
            status,
            html,
            headers: h,
            token,
        }
    }

    /// Loads `/<app>` and connects its websocket, like a tab that finished loading.
    pub async fn open(&mut self, base: &str, app: &str) -> Tab {
        let page = self.get(&format!("{base}/{app}"), &[]).await;
        assert_eq!(page.status, 200, "page status; body: {}", page.html);
        let token = page.token.clone().expect("page has a token");
        self.connect(base, app, &token)
            .await
            .expect("websocket opens")
            .ready()
            .await
    }

    /// Opens a websocket with this browser's cookie and headers; Err(status) when refused.
    pub async fn connect(&self, base: &str, app: &str, token: &str) -> Result<Tab, String> {
        Tab::connect_full(
            base,
            app,
            token,
            self.cookie.as_deref(),
            None,
            &self.headers,
        )
        .await
    }
}

/// A connected tab: one Bokeh websocket and its copy of the document.
pub struct Tab {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub doc: Doc,
    pub session_id: String,
    pub token: String,
    next: u64,
}

/// A received Bokeh message.
pub struct Msg {
    pub header: Value,
    pub content: Value,
}

impl Tab {
    /// Opens the websocket with a token and cookie; Err(status) when refused.
    pub async fn connect(
        base: &str,
        app: &str,
        token: &str,
        cookie: Option<&str>,
    ) -> Result<Tab, String> {
        Self::connect_with(base, app, token, cookie, None).await
    }

    pub async fn connect_with(
        base: &str,
        app: &str,
        token: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Tab, String> {
        Self::connect_full(base, app, token, cookie, origin, &[]).await
    }

    async fn connect_full(
        base: &str,
        app: &str,
        token: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
        extra: &[(String, String)],
    ) -> Result<Tab, String> {
        let ws_url = format!("{}/{app}/ws", base.replacen("http://", "ws://", 1));
        let mut req = ws_url.into_client_request().unwrap();
        let h = req.headers_mut();
        h.insert(
            "sec-websocket-protocol",
            format!("bokeh, {token}").parse().unwrap(),
        );
        // A browser's Origin is scheme and host, never a path (as `base` may have under a prefix).
        let own = base
            .char_indices()
            .filter(|(_, c)| *c == '/')
            .nth(2)
            .map_or(base, |(i, _)| &base[..i]);
        h.insert("origin", origin.unwrap_or(own).parse().unwrap());
        if let Some(c) = cookie {
            h.insert("cookie", c.parse().unwrap());
        }
        for (k, v) in extra {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(Tab {
                ws,
                doc: Doc::default(),
                session_id: session_of(token),
                token: token.to_owned(),
                next: 0,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                Err(format!("{}", resp.status().as_u16()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits for the ACK, pulls the document, and sends `document_ready`, as BokehJS does.
    pub async fn ready(mut self) -> Tab {
        let ack = self.recv().await.expect("ACK");
        assert_eq!(ack.header["msgtype"], "ACK");
        self.pull().await;
        self.event("document_ready", json!({"type": "map"})).await;
        self.settle().await;
        self
    }

    pub async fn pull(&mut self) {
        let id = self.send("PULL-DOC-REQ", json!({})).await;
        let reply = self.reply_to(&id).await;
        assert_eq!(reply.header["msgtype"], "PULL-DOC-REPLY");
        self.doc = Doc::from_pull(&reply.content);
    }

    async fn send(&mut self, msgtype: &str, content: Value) -> String {
        self.next += 1;
        let id = format!("t{}", self.next);
        let header = json!({"msgid": id, "msgtype": msgtype});
        for part in [header.to_string(), "{}".to_owned(), content.to_string()] {
            self.ws.send(Message::text(part)).await.unwrap();
        }
        id
    }

    /// Next whole message (buffers skipped); None when the socket closed or 30 s passed.
    pub async fn recv(&mut self) -> Option<Msg> {
        self.recv_within(Duration::from_secs(30)).await
    }

    pub async fn recv_within(&mut self, within: Duration) -> Option<Msg> {
        let header: Value = serde_json::from_str(&self.text_frame(within).await?).ok()?;
        let _metadata = self.text_frame(within).await?;
        let content: Value = serde_json::from_str(&self.text_frame(within).await?).ok()?;
        for _ in 0..header["num_buffers"].as_u64().unwrap_or(0) {
            let _id = self.text_frame(within).await?;
            tokio::time::timeout(within, self.ws.next())
                .await
                .ok()??
                .ok()?;
        }
        let msg = Msg { header, content };
        if msg.header["msgtype"] == "PATCH-DOC" {
            self.doc.apply_patch(&msg.content);
        }
        Some(msg)
    }

    /// Reads until the gateway closes the socket; its close code, or None if `within` passed
    /// (or the socket ended without a close frame).
    pub async fn close_code_within(&mut self, within: Duration) -> Option<u16> {
        let until = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(until, self.ws.next())
                .await
                .ok()??
            {
                Ok(Message::Close(frame)) => return frame.map(|f| f.code.into()),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    async fn text_frame(&mut self, within: Duration) -> Option<String> {
        loop {
            match tokio::time::timeout(within, self.ws.next())
                .await
                .ok()??
                .ok()?
            {
                Message::Text(t) => return Some(t.to_string()),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    async fn reply_to(&mut self, id: &str) -> Msg {
        loop {
            let m = self.recv().await.expect("reply before the socket closed");
            if m.header["reqid"] == id {
                return m;
            }
        }
    }

    /// Sends one PATCH-DOC and waits for its OK.
    pub async fn patch(&mut self, events: Value) {
        let id = self.send("PATCH-DOC", json!({ "events": events })).await;
        let reply = self.reply_to(&id).await;
        assert_eq!(
            reply.header["msgtype"], "OK",
            "worker answered {}",
            reply.content
        );
    }

    /// Sends one PATCH-DOC and returns the type of the worker's answer (`OK` or `ERROR`).
    pub async fn send_patch(&mut self, events: Value) -> String {
        let id = self.send("PATCH-DOC", json!({ "events": events })).await;
        let reply = self.reply_to(&id).await;
        reply.header["msgtype"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A widget change, as BokehJS sends it; applied to our copy too (no echo comes back).
    pub async fn set(&mut self, id: &str, attr: &str, new: Value) {
        self.patch(
            json!([{"kind": "ModelChanged", "model": {"id": id}, "attr": attr, "new": new}]),
        )
        .await;
        if let Some(m) = self.doc.models.get_mut(id) {
            m["attributes"][attr] = new;
        }
    }

    /// A UI event such as `button_click` on a model.
    pub async fn click(&mut self, id: &str) {
        self.event(
            "button_click",
            json!({"type": "map", "entries": [["model", {"id": id}]]}),
        )
        .await;
    }

    pub async fn event(&mut self, name: &str, values: Value) {
        self.patch(json!([{
            "kind": "MessageSent", "msg_type": "bokeh_event",
            "msg_data": {"type": "event", "name": name, "values": values}
        }]))
        .await;
    }

    /// Reads until the worker has been quiet for a while, applying patches; an app that is
    /// never quiet (a periodic callback) is read for 3 s at most.
    /// The moment a person takes between two actions; what arrives meanwhile is read later.
    /// Before Panel 1.8 a click sent within 50 ms of a change runs before that change
    /// reaches Python, in a real browser as here, so a test that acts faster than a person
    /// would test its client, not tether.
    pub async fn pause(&self) {
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    pub async fn settle(&mut self) {
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < until
            && self.recv_within(Duration::from_millis(400)).await.is_some()
        {}
    }

    /// Waits until `pred` holds on the document (patches applied as they come), or panics.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Doc) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !pred(&self.doc) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            self.recv_within(Duration::from_millis(200)).await;
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Let the gateway see the close before the next request.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), self.ws.next()).await {
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Drops the connection without a close handshake, like a network failure.
    pub fn drop_hard(self) {
        drop(self);
    }
}
