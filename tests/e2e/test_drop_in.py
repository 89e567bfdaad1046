"""tether where `panel serve` users put it: behind nginx on a sub-path, embedded in another
page with `bokeh.embed.server_document`, and serving HTTPS itself.

Each check drives the catalog as a user would and asserts what the page shows: the selection
and plot survive a reload (the live session), and a restart (the recorded state).
"""
from __future__ import annotations

import functools
import http.server
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import Tether, serving
from test_login import LOOPBACK
from test_catalog import PICK_A, PICK_B, expect_plot, select_and_plot, shot, shown, wait_for_plot, wait_rendered

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PREFIX = "/sub"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def reload_shows(page, names: list[str]) -> None:
    page.reload(wait_until="domcontentloaded")
    wait_rendered(page)
    wait_for_plot(page, names, timeout=10_000)
    assert shown(page) == expect_plot(names)


# -- a gateway under /sub, nginx in front of it, and a page that embeds it ------------------
class Site:
    embed_port = free_port()
    foreign_port = free_port()


@pytest.fixture(scope="module")
def sub_tether(artifacts):
    args = ["--prefix", PREFIX, "--allow-websocket-origin", f"127.0.0.1:{Site.embed_port}"]
    with serving(artifacts, "sub", args) as server:
        yield server


NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 128; }}
http {{
  access_log {dir}/access.log;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen 127.0.0.1:{port};
    location {prefix}/ {{
      proxy_pass http://127.0.0.1:{upstream};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_read_timeout 1h;
    }}
  }}
}}
"""


@pytest.fixture(scope="module")
def nginx(sub_tether, artifacts):
    """nginx on a loopback port, proxying /sub/ (websockets too) to the gateway."""
    assert Path(NGINX).exists(), f"{NGINX} is missing: run `make system-deps`"
    workdir = Path(tempfile.mkdtemp(prefix="tether-e2e-nginx-"))
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port, prefix=PREFIX, upstream=sub_tether.port))
    proc = subprocess.Popen(
        [NGINX, "-e", str(workdir / "error.log"), "-p", str(workdir), "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(artifacts / "nginx.log", "ab"),
        start_new_session=True,
    )
    try:
        wait_listening(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def test_10_behind_nginx_on_a_sub_path(new_context, sub_tether, nginx):
    """`--prefix /sub` behind nginx's `location /sub/`: the app, its websocket and tether's
    own endpoints all answer through the proxy, and the state survives a reload and a restart."""
    with urllib.request.urlopen(f"{nginx}{PREFIX}/.tether/health", timeout=10) as r:
        assert r.status == 200
    ctx = new_context("nginx")
    page = ctx.new_page()
    page.goto(f"{nginx}{PREFIX}/catalog", wait_until="domcontentloaded")
    wait_rendered(page)
    assert [ws.url for ws in page.websockets] == [f"{nginx.replace('http', 'ws')}{PREFIX}/catalog/ws"]
    select_and_plot(page, PICK_A)
    reload_shows(page, PICK_A)
    sub_tether.restart()
    reload_shows(page, PICK_A)
    assert any("restore=true" in l for l in sub_tether.page_lines()), sub_tether.page_lines()
    shot(page, "10-nginx-sub-path")


def embedding_page(directory: Path, app_url: str, with_credentials: bool) -> None:
    """An HTML page of another server that embeds the app, as `server_document` writes it;
    with credentials, the script's request carries (and may set) tether's cookie."""
    from bokeh.embed import server_document

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.html").write_text(
        '<!doctype html><html><head><title>embedding page</title><link rel="icon" href="data:,">'
        "</head><body><h1>Our report</h1>"
        + server_document(app_url, with_credentials=with_credentials)
        + "</body></html>"
    )


def no_cdn(ctx) -> None:
    """An embedded Panel app links its stylesheets from Panel's CDN, under `panel serve` as
    here. Tests touch loopback only, so those are answered here, empty, never sent."""
    ctx.route(
        lambda url: urlsplit(url).hostname not in LOOPBACK,
        lambda route: route.fulfill(status=200, body="", content_type="text/css"),
    )


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def embedding_site(sub_tether):
    """The embedding page, on an allowed port; and another, on a port tether was not told
    of, whose script is fetched without cookies, as the wildcard CORS answer allows."""
    root = Path(tempfile.mkdtemp(prefix="tether-e2e-embed-"))
    app_url = f"http://127.0.0.1:{sub_tether.port}{PREFIX}/catalog"
    servers = []
    for port, with_credentials in ((Site.embed_port, True), (Site.foreign_port, False)):
        directory = root / str(port)
        embedding_page(directory, app_url, with_credentials)
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", port), functools.partial(Quiet, directory=str(directory))
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield {"allowed": f"http://127.0.0.1:{Site.embed_port}/", "foreign": f"http://127.0.0.1:{Site.foreign_port}/"}
    for server in servers:
        server.shutdown()
        server.server_close()
    shutil.rmtree(root, ignore_errors=True)


def test_11_embedded_with_server_document(new_context, browser, sub_tether, embedding_site):
    """Another same-site page embeds the app with `server_document`: the script
    (`/<app>/autoload.js`) makes a tether session, so the embedded app keeps its state
    across a reload of the page and a restart of tether. A page of an origin tether was not
    given (`--allow-websocket-origin`) gets no websocket."""
    ctx = new_context("embed")
    no_cdn(ctx)
    page = ctx.new_page()
    page.goto(embedding_site["allowed"], wait_until="domcontentloaded")
    page.get_by_text("Our report").wait_for()
    wait_rendered(page)
    select_and_plot(page, PICK_B)
    reload_shows(page, PICK_B)
    sub_tether.restart()
    reload_shows(page, PICK_B)
    shot(page, "11-embedded")

    # Someone who has used the app opens a page tether was not told of: its script gets a
    # session of nobody's, and the websocket, which carries their cookie, is refused.
    foreign = new_context("embed-foreign")
    no_cdn(foreign)
    direct = foreign.new_page()
    direct.goto(sub_tether.url, wait_until="domcontentloaded")
    wait_rendered(direct)
    other = foreign.new_page()
    other.goto(embedding_site["foreign"], wait_until="domcontentloaded")
    other.get_by_text("Our report").wait_for()
    deadline = time.monotonic() + 20
    while "Cross-site websocket refused" not in sub_tether.log_since_start():
        assert time.monotonic() < deadline, "a page of an unlisted origin was not refused its websocket"
        other.wait_for_timeout(200)  # not time.sleep: the routes above are answered meanwhile
    assert other.locator(".tabulator-row").count() == 0
    # The refused page's console errors are this check's expected outcome. BokehJS logs its
    # last one a moment after the refusal reached the gateway's log: wait for it, then drop them.
    deadline = time.monotonic() + 10
    while not any(e[0] == "embed-foreign" and "Error rendering Bokeh items" in e[1] for e in browser.errors):
        assert time.monotonic() < deadline, f"BokehJS did not report the refused websocket: {browser.errors}"
        other.wait_for_timeout(200)
    browser.errors[:] = [e for e in browser.errors if e[0] != "embed-foreign"]


# -- HTTPS of tether's own ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_tether(artifacts):
    workdir = Path(tempfile.mkdtemp(prefix="tether-e2e-tls-"))
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    server = Tether(
        workdir,
        artifacts / "tether-tls.log",
        ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)],
    )
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def test_12_https_of_its_own(new_context, tls_tether):
    """`--ssl-certfile/--ssl-keyfile`: the page and its websocket are TLS, the identity cookie
    is `Secure`, and the session survives a reload."""
    assert tls_tether.url.startswith("https://"), tls_tether.url
    ctx = new_context("tls", ignore_https_errors=True)
    page = ctx.new_page()
    page.goto(tls_tether.url, wait_until="domcontentloaded")
    wait_rendered(page)
    assert [ws.url.split(":")[0] for ws in page.websockets] == ["wss"]
    identity = next(c for c in ctx.cookies() if c["name"] == "tether_id")
    assert identity["secure"] and identity["httpOnly"], identity
    select_and_plot(page, PICK_A)
    reload_shows(page, PICK_A)
    shot(page, "12-https")
