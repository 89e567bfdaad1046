#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/seeds/ from the captured fixtures.

Run from anywhere: python3 fuzz/seeds.py. The message format is the one
fuzz_targets/message.rs reads: frames of `tag, u16 LE length, payload`, tag bit 0 =
binary, bit 1 = from the browser. The token format is fields split at 0xFF bytes
(see fuzz_targets/token.rs); its keys are the fixed ones the target uses.
"""

import base64
import hashlib
import hmac
import json
import pathlib
import shutil
import struct

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent / "crates/tether/src/protocol/fixtures"
OUT = HERE / "seeds"

TEXT, BINARY, BROWSER = 0, 1, 2


def frame(tag, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    assert len(payload) < 65536
    return bytes([tag]) + struct.pack("<H", len(payload)) + payload


def message(msgtype, content, msgid, browser, reqid=None):
    header = {"msgid": msgid, "msgtype": msgtype}
    if reqid:
        header["reqid"] = reqid
    tag = TEXT | (BROWSER if browser else 0)
    return b"".join(frame(tag, p) for p in (json.dumps(header), "{}", content))


def fixture_frames(name, browser):
    out = b""
    for f in json.loads((FIXTURES / name).read_text()):
        side = BROWSER if browser else 0
        if "text" in f:
            out += frame(TEXT | side, f["text"])
        else:
            out += frame(BINARY | side, base64.b64decode(f["binary"]))
    return out


def lines(name):
    return [l for l in (FIXTURES / name).read_text().splitlines() if l.strip()]


# Browser patches that carry references, which the captures lack.
SYNTHETIC_CLIENT = [
    '{"events":[{"kind":"ModelChanged","model":{"id":"p1076"},"attr":"children",'
    '"new":[{"id":"p1070"},{"type":"ref","id":"p1071"}]}]}',
    '{"events":[{"kind":"ModelChanged","model":{"id":"p1070"},"attr":"tags",'
    '"new":[{"type":"map","entries":[["k",{"id":"p1065"}]]},{"a":{"id":"p1072"}}]}]}',
    '{"events":[{"kind":"ModelChanged","model":{"id":"p1070"},"attr":"js_property_callbacks",'
    '"new":{"type":"object","name":"CustomJS","id":"x1","attributes":{"args":{"id":"p1070"}}}}]}',
    '{"events":[{"kind":"RootAdded","model":{"type":"object","name":"Div","id":"x2"}},'
    '{"kind":"RootRemoved","model":{"id":"x2"}},{"kind":"TitleChanged","title":"t"}]}',
]


def session(pull_fixture, client_patches):
    out = message("ACK", "{}", "ack1", browser=False)
    out += fixture_frames("s1_frames_pull_req.json", browser=True)
    out += message(
        "PULL-DOC-REPLY",
        (FIXTURES / pull_fixture).read_text(),
        "r1",
        browser=False,
        reqid="3CE7BE0661AA4E7EA51CB0509909DCE5",
    )
    for i, patch in enumerate(client_patches):
        out += message("PATCH-DOC", patch, f"c{i}", browser=True)
        out += message("OK", "{}", f"ok{i}", browser=False, reqid=f"c{i}")
    for i, patch in enumerate(lines("s1_server_patches.jsonl")):
        out += message("PATCH-DOC", patch, f"s{i}", browser=False)
    out += fixture_frames("s1_frames_with_buffers.json", browser=False)
    return out


def message_seeds():
    client = lines("s1_client_patches.jsonl")
    seeds = {
        "session_s1": session("s1_pull_reply.json", client),
        "session_s2": session("s2_pull_reply.json", client),
        "synthetic_refs": session("s1_pull_reply.json", SYNTHETIC_CLIENT),
        "browser_buffers": fixture_frames("s1_frames_with_buffers.json", browser=True),
    }
    for i, patch in enumerate(client + SYNTHETIC_CLIENT):
        seeds[f"patch_{i:02}"] = session("s1_pull_reply.json", [patch])
    return seeds


SECRET = bytes([7] * 32)


def derive(label):
    return hmac.new(SECRET, label.encode(), hashlib.sha256).digest()


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bokeh_sig(data):
    key = derive("tether bokeh session signing").hex().encode()
    return b64(hmac.new(key, data.encode(), hashlib.sha256).digest())


def session_id(user, app, nonce="abcdefghij0123456789"):
    mac = hmac.new(derive("tether session ownership"), digestmod=hashlib.sha256)
    for part in (user, app, nonce):
        mac.update(part.encode() + b"\0")
    base = nonce + mac.hexdigest()[:24]
    return f"{base}.{bokeh_sig(base)}"


def token_seeds():
    user, app = "0123456789abcdef0123456789abcdef", "catalog"
    sid = session_id(user, app)
    claims = {"session_id": sid, "session_expiry": 1700000000, "__bk__zlib_": "eJyrrgUAAXUA-Q"}
    body = b64(json.dumps(claims).encode())
    cookies = [
        "a=1; tether_id=@; b=2",
        "tether_id=@",
        ' tether_id = "@" ;tether_id=x',
        "TETHER_ID=@; tether_id=@@",
    ]
    fields = [f"{body}.{bokeh_sig(body)}", body, sid, user, app] + cookies
    seeds = {"valid": b"\xff".join(f.encode() for f in fields)}
    seeds["other_owner"] = b"\xff".join(
        f.encode() for f in [body + ".x", "e30", sid, "ffff" + user[4:], app, "tether_id=@x"]
    )
    return seeds


def main():
    for target, seeds in (("message", message_seeds()), ("token", token_seeds())):
        out = OUT / target
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for name, data in seeds.items():
            (out / name).write_bytes(data)
        print(f"{out}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
