//! A browser-like client: page GETs with a cookie jar, and tabs that speak the Bokeh
//! websocket protocol (ACK, PULL-DOC, PATCH-DOC, OK) over real loopback sockets.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::header::{COOKIE, HOST, ORIGIN, SEC_WEBSOCKET_PROTOCOL, SET_COOKIE};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Longest wait for any single reply; a stuck server fails the run instead of hanging it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// One browser profile: its cookies.
#[derive(Default, Clone)]
pub struct Browser {
    /// `name=value` pairs set by the server, sent back on every request.
    cookies: Vec<(String, String)>,
}

/// A fetched app page.
pub struct Page {
    /// The Bokeh token embedded in the page.
    pub token: String,
    /// Size of the HTML.
    pub bytes: usize,
}

impl Browser {
    pub fn new() -> Browser {
        Browser::default()
    }

    fn cookie_header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| {
            self.cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn store_cookie(&mut self, set_cookie: &str) {
        let pair = set_cookie.split(';').next().unwrap_or("");
        if let Some((k, v)) = pair.split_once('=') {
            self.cookies.retain(|(name, _)| name != k.trim());
            self.cookies
                .push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }

    /// GETs `path` on a fresh connection; keeps any cookie. Returns the status and body.
    async fn fetch(
        &mut self,
        addr: SocketAddr,
        path: &str,
    ) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::get(path).header(HOST, addr.to_string());
        if let Some(c) = self.cookie_header() {
            req = req.header(COOKIE, c);
        }
        let exchange = async {
            let resp = sender
                .send_request(req.body(Empty::<Bytes>::new())?)
                .await?;
            let status = resp.status();
            for sc in resp.headers().get_all(SET_COOKIE) {
                if let Ok(sc) = sc.to_str() {
                    self.store_cookie(sc);
                }
            }
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(REPLY_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("GET {path} on {addr} took over {REPLY_TIMEOUT:?}"))?
    }

    /// GETs `/<app>` on a fresh connection, as a first visit does; keeps any cookie.
    pub async fn page(&mut self, addr: SocketAddr, app: &str) -> anyhow::Result<Page> {
        let (status, body) = self.fetch(addr, &format!("/{app}")).await?;
        let html = String::from_utf8_lossy(&body);
        if !status.is_success() {
            bail!(
                "GET /{app} on {addr} answered {status}: {}",
                html.chars().take(300).collect::<String>()
            );
        }
        let token = html
            .split("\"token\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .ok_or_else(|| anyhow!("the page of /{app} on {addr} has no Bokeh token"))?
            .to_owned();
        Ok(Page {
            token,
            bytes: body.len(),
        })
    }

    /// Opens the app's websocket with a page's token and this browser's cookies.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        app: &str,
        token: &str,
        read_buffer: usize,
    ) -> anyhow::Result<Tab> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut req = format!("ws://{addr}/{app}/ws").into_client_request()?;
        let h = req.headers_mut();
        h.insert(SEC_WEBSOCKET_PROTOCOL, format!("bokeh, {token}").parse()?);
        h.insert(ORIGIN, format!("http://{addr}").parse()?);
        if let Some(c) = self.cookie_header() {
            h.insert(COOKIE, c.parse()?);
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(read_buffer)
            .max_message_size(Some(256 << 20))
            .max_frame_size(Some(256 << 20));
        let (ws, _) = tokio::time::timeout(
            REPLY_TIMEOUT,
            tokio_tungstenite::client_async_with_config(req, stream, Some(config)),
        )
        .await
        .map_err(|_| anyhow!("websocket handshake with {addr} took over {REPLY_TIMEOUT:?}"))?
        .with_context(|| format!("websocket to /{app}/ws on {addr}"))?;
        Ok(Tab { ws, next: 0 })
    }

    /// Page, websocket and ACK: what a tab has before it pulls the document.
    pub async fn open(&mut self, addr: SocketAddr, app: &str) -> anyhow::Result<Tab> {
        let page = self.page(addr, app).await?;
        let mut tab = self.connect(addr, app, &page.token, 128 << 10).await?;
        tab.expect_ack().await?;
        Ok(tab)
    }

    /// A page load as BokehJS does it, timed step by step; returns the tab and its document.
    pub async fn load(
        &mut self,
        addr: SocketAddr,
        app: &str,
    ) -> anyhow::Result<(Tab, Value, LoadTimes)> {
        let t0 = Instant::now();
        let page = self.page(addr, app).await?;
        let t1 = Instant::now();
        let mut tab = self.connect(addr, app, &page.token, 128 << 10).await?;
        tab.expect_ack().await?;
        let t2 = Instant::now();
        let doc = tab.pull().await?;
        let times = LoadTimes {
            page: t1 - t0,
            socket: t2 - t1,
            pull: t2.elapsed(),
        };
        Ok((tab, doc, times))
    }
}

/// How long each step of a page load took.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadTimes {
    /// GET of the page (which creates the session and runs the app).
    pub page: Duration,
    /// Websocket handshake until the ACK (which tether holds back during a restore).
    pub socket: Duration,
    /// PULL-DOC request until its reply.
    pub pull: Duration,
}

impl LoadTimes {
    pub fn total(&self) -> Duration {
        self.page + self.socket + self.pull
    }
}

/// A received Bokeh message; buffers are skipped.
pub struct Msg {
    pub msgtype: String,
    pub reqid: Option<String>,
    pub content: Utf8Bytes,
}

/// One Bokeh websocket.
pub struct Tab {
    ws: WebSocketStream<TcpStream>,
    /// Counter for message ids.
    next: u64,
}

impl Tab {
    /// Sends a message (header, metadata and content frames); returns its id. Each frame is
    /// written on its own, as BokehJS's three `socket.send` calls are.
    pub async fn send(&mut self, msgtype: &str, content: &str) -> anyhow::Result<String> {
        self.next += 1;
        let id = format!("b{}", self.next);
        let header = json!({"msgid": id, "msgtype": msgtype}).to_string();
        self.ws.send(Message::text(header)).await?;
        self.ws.send(Message::text("{}")).await?;
        self.ws.send(Message::text(content)).await?;
        Ok(id)
    }

    async fn text(&mut self, deadline: Instant) -> anyhow::Result<Utf8Bytes> {
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| anyhow!("no message from the server within {REPLY_TIMEOUT:?}"))?
                .ok_or_else(|| anyhow!("the server closed the websocket"))??;
            match frame {
                Message::Text(t) => return Ok(t),
                Message::Close(c) => bail!("the server closed the websocket: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The next whole message, within `within`.
    pub async fn recv_within(&mut self, within: Duration) -> anyhow::Result<Msg> {
        let deadline = Instant::now() + within;
        let header: Value = serde_json::from_str(self.text(deadline).await?.as_str())?;
        let _metadata = self.text(deadline).await?;
        let content = self.text(deadline).await?;
        for _ in 0..header["num_buffers"].as_u64().unwrap_or(0) {
            let _buffer_header = self.text(deadline).await?;
            tokio::time::timeout_at(deadline, self.ws.next()).await?;
        }
        Ok(Msg {
            msgtype: header["msgtype"].as_str().unwrap_or_default().to_owned(),
            reqid: header["reqid"].as_str().map(str::to_owned),
            content,
        })
    }

    pub async fn recv(&mut self) -> anyhow::Result<Msg> {
        self.recv_within(REPLY_TIMEOUT).await
    }

    async fn expect_ack(&mut self) -> anyhow::Result<()> {
        let m = self.recv().await?;
        if m.msgtype != "ACK" {
            bail!("expected ACK, got {}", m.msgtype);
        }
        Ok(())
    }

    /// Sends a request and returns its reply, skipping anything else.
    pub async fn request(&mut self, msgtype: &str, content: &str) -> anyhow::Result<Msg> {
        let id = self.send(msgtype, content).await?;
        loop {
            let m = self.recv().await?;
            if m.reqid.as_deref() == Some(id.as_str()) {
                if m.msgtype == "ERROR" {
                    bail!("the server refused {msgtype}: {}", m.content.as_str());
                }
                return Ok(m);
            }
        }
    }

    /// Pulls the document; returns the reply's content.
    pub async fn pull(&mut self) -> anyhow::Result<Value> {
        let m = self.request("PULL-DOC-REQ", "{}").await?;
        if m.msgtype != "PULL-DOC-REPLY" {
            bail!("expected PULL-DOC-REPLY, got {}", m.msgtype);
        }
        Ok(serde_json::from_str(m.content.as_str())?)
    }

    /// Sends `document_ready`, as BokehJS does once the page is shown, and waits for its OK.
    pub async fn ready(&mut self) -> anyhow::Result<()> {
        self.request(
            "PATCH-DOC",
            &event_patch("document_ready", json!({"type": "map"})),
        )
        .await?;
        self.settle(Duration::from_millis(300)).await;
        Ok(())
    }

    /// Reads until the server has been quiet for `quiet`, or for 3 s at most (an app with a
    /// periodic callback is never quiet); returns how many messages came.
    pub async fn settle(&mut self, quiet: Duration) -> usize {
        let until = Instant::now() + Duration::from_secs(3);
        let mut n = 0;
        while Instant::now() < until && self.recv_within(quiet).await.is_ok() {
            n += 1;
        }
        n
    }

    /// Closes the websocket and waits briefly for the server's close.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Keeps the tab alive without traffic (answering pings) until the socket ends.
    pub async fn idle(mut self) {
        while let Some(Ok(_)) = self.ws.next().await {}
    }
}

/// The body of `GET path`, when it answers 200.
pub async fn get_text(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let (status, body) = Browser::new().fetch(addr, path).await?;
    anyhow::ensure!(
        status.is_success(),
        "GET {path} on {addr} answered {status}"
    );
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A PATCH-DOC setting `attr` of model `id`, as BokehJS sends a widget change.
pub fn change_patch(id: &str, attr: &str, new: Value) -> String {
    json!({"events": [{"kind": "ModelChanged", "model": {"id": id}, "attr": attr, "new": new}]})
        .to_string()
}

/// A PATCH-DOC carrying a UI event such as `button_click`.
pub fn event_patch(name: &str, values: Value) -> String {
    json!({"events": [{
        "kind": "MessageSent", "msg_type": "bokeh_event",
        "msg_data": {"type": "event", "name": name, "values": values}
    }]})
    .to_string()
}

/// A click on the button model `id`.
pub fn click_patch(id: &str) -> String {
    event_patch(
        "button_click",
        json!({"type": "map", "entries": [["model", {"id": id}]]}),
    )
}

/// The id of the model whose `title`, `label` or `name` attribute is `label`.
pub fn find_model(doc: &Value, label: &str) -> Option<String> {
    match doc {
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) == Some("object") {
                let attrs = &o.get("attributes");
                let named = ["title", "label", "name"]
                    .iter()
                    .any(|k| attrs.and_then(|a| a.get(k)).and_then(Value::as_str) == Some(label));
                if named {
                    return o.get("id").and_then(Value::as_str).map(str::to_owned);
                }
            }
            o.values().find_map(|v| find_model(v, label))
        }
        Value::Array(a) => a.iter().find_map(|v| find_model(v, label)),
        _ => None,
    }
}
