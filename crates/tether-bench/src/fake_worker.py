"""A stand-in Panel worker for tether-bench's idle-connection measurement.

tether starts its workers as `python -c BOOTSTRAP APPS -- --unix-socket PATH ...`; the `python`
that tether-bench passes as `--python` runs this script instead, with those arguments.
It speaks just enough of a Bokeh server for an idle tab, using only the standard library:

- GET /<app> with a `Bokeh-Session-Id: ID` header (or `?bokeh-session-id=ID`) answers a page
  whose token is signed with
  BOKEH_SECRET_KEY, as Bokeh signs it, so tether accepts the websocket that follows;
- a websocket upgrade answers 101 with the `bokeh` subprotocol and an ACK message; then
  every message that comes is answered at once, in one write, with its OK and a PATCH-DOC
  echoing its content (a worker with no work and no Nagle delay, so that a round trip
  shows what the proxy in between adds).

Started by tether, it exits when its standard input (tether's lifeline pipe) closes. Run
directly, it takes `--port P` instead.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import stat
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
    n = len(data)
    if n < 126:
        return bytes([0x81, n]) + data
    if n < 1 << 16:
        return bytes([0x81, 126]) + n.to_bytes(2, "big") + data
    return bytes([0x81, 127]) + n.to_bytes(8, "big") + data


async def read_frame(reader):
    """(opcode, payload) of the next frame from a client (masked)."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    mask = await reader.readexactly(4) if b1 & 0x80 else None
    data = await reader.readexactly(n)
    if mask and n:
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        data = (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")
    return b0 & 0x0F, data


async def echo(reader, writer):
    """Answers each message with its OK and a PATCH-DOC carrying the same content."""
    serial = 1
    frames = []
    while True:
        opcode, data = await read_frame(reader)
        if opcode == 8:
            writer.write(bytes([0x88, 0]))
            await writer.drain()
            return
        if opcode == 9:
            writer.write(bytes([0x8A, len(data)]) + data)
            continue
        if opcode not in (1, 2):
            continue
        frames.append(data)
        header = json.loads(frames[0])
        if len(frames) < 3 + 2 * header.get("num_buffers", 0):
            continue
        content = frames[2].decode()
        frames = []
        ok = json.dumps({"msgid": str(serial + 1), "msgtype": "OK", "reqid": header["msgid"]})
        patch = json.dumps({"msgid": str(serial + 2), "msgtype": "PATCH-DOC"})
        serial += 2
        writer.write(b"".join(text_frame(t) for t in [ok, "{}", "{}", patch, "{}", content]))
        await writer.drain()


async def serve(reader, writer):
    sock = writer.get_extra_info("socket")
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
                await echo(reader, writer)
                return
            query = target.partition("?")[2]
            session = headers.get("bokeh-session-id") or next(
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
    except (asyncio.IncompleteReadError, ConnectionError, IndexError, KeyError, ValueError):
        pass
    finally:
        writer.close()


def lifeline():
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


async def main():
    if "--unix-socket" in sys.argv:
        path = sys.argv[sys.argv.index("--unix-socket") + 1]
        server = await asyncio.start_unix_server(serve, path, backlog=4096)
        os.chmod(path, 0o600)
    else:
        port = int(sys.argv[sys.argv.index("--port") + 1])
        server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if stat.S_ISFIFO(os.fstat(0).st_mode):
    threading.Thread(target=lifeline, daemon=True).start()
asyncio.run(main())
