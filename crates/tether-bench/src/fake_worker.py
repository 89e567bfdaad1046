"""A stand-in Panel worker for tether-bench's idle-connection measurement.

tether starts its workers as `python -c BOOTSTRAP APPS -- --port P ...`; the `python`
that tether-bench passes as `--python` runs this script instead, with those arguments.
It speaks just enough of a Bokeh server for an idle tab, using only the standard library:

- GET /<app>?bokeh-session-id=ID answers a page whose token is signed with
  BOKEH_SECRET_KEY, as Bokeh signs it, so tether accepts the websocket that follows;
- a websocket upgrade answers 101 with the `bokeh` subprotocol and an ACK message, then
  reads and discards whatever comes.

It exits when its standard input closes, as tether's real workers do.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time

KEY = os.environ.get("BOKEH_SECRET_KEY", "").encode()
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ACK = [json.dumps({"msgid": "1", "msgtype": "ACK"}), "{}", "{}"]


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(session_id):
    claims = {"session_id": session_id, "session_expiry": int(time.time()) + 300}
    body = b64(json.dumps(claims).encode())
    return body + "." + b64(hmac.new(KEY, body.encode(), hashlib.sha256).digest())


def text_frame(text):
    data = text.encode()
    assert len(data) < 126
    return bytes([0x81, len(data)]) + data


async def serve(reader, writer):
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            target = head[0].split(" ")[1]
            headers = {}
            for line in head[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if headers.get("upgrade", "").lower() == "websocket":
                key = headers["sec-websocket-key"] + GUID
                accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Protocol: bokeh\r\n"
                    + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
                    + b"".join(text_frame(t) for t in ACK)
                )
                await writer.drain()
                while await reader.read(65536):
                    pass
                return
            query = target.partition("?")[2]
            session = next(
                (p.split("=", 1)[1] for p in query.split("&") if p.startswith("bokeh-session-id=")),
                "none",
            )
            body = ('<!doctype html><script>var items=[{"token":"%s"}]</script>' % token(session)).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                + b"Content-Length: %d\r\n\r\n" % len(body)
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, IndexError, KeyError):
        pass
    finally:
        writer.close()


def lifeline():
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


async def main():
    port = int(sys.argv[sys.argv.index("--port") + 1])
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


threading.Thread(target=lifeline, daemon=True).start()
asyncio.run(main())
