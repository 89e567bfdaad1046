//! Tests of message assembly, on frames captured from a real `panel serve` session.

use super::*;
use base64::Engine;

/// Frames of a fixture: `[{"text": ...} | {"binary": base64}]`.
fn frames(json: &str) -> Vec<Part> {
    let list: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(json).unwrap();
    list.into_iter()
        .map(|f| match (f.get("text"), f.get("binary")) {
            (Some(t), _) => Part::Text(Bytes::from(t.as_str().unwrap().to_owned())),
            (_, Some(b)) => Part::Binary(Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(b.as_str().unwrap())
                    .unwrap(),
            )),
            _ => panic!("bad fixture frame"),
        })
        .collect()
}

const PULL_REQ: &str = include_str!("fixtures/s1_frames_pull_req.json");
const PATCH_WITH_BUFFERS: &str = include_str!("fixtures/s1_frames_with_buffers.json");

fn text(s: &str) -> Part {
    Part::Text(Bytes::from(s.to_owned()))
}

fn feed(asm: &mut Assembler, parts: Vec<Part>) -> Vec<Result<Option<Message>, ProtocolError>> {
    parts.into_iter().map(|p| asm.push(p)).collect()
}

#[test]
fn assembles_a_browser_pull_request() {
    let parts = frames(PULL_REQ);
    let mut asm = Assembler::new(MessageLimits::default());
    let mut results = feed(&mut asm, parts.clone());
    let last = results.pop().unwrap().unwrap().unwrap();
    assert!(results.iter().all(|r| matches!(r, Ok(None))));
    assert_eq!(last.msgtype(), "PULL-DOC-REQ");
    assert_eq!(last.header.msgid, "3CE7BE0661AA4E7EA51CB0509909DCE5");
    assert_eq!(last.header.reqid, None);
    assert_eq!(last.header.num_buffers, 0);
    assert_eq!(last.content(), b"{}");
    assert_eq!(last.parts, parts);
}

#[test]
fn assembles_a_server_patch_with_buffers_byte_identical() {
    let parts = frames(PATCH_WITH_BUFFERS);
    assert_eq!(parts.len(), 7);
    let mut asm = Assembler::new(MessageLimits::default());
    for p in &parts[..6] {
        assert!(asm.push(p.clone()).unwrap().is_none());
    }
    let msg = asm.push(parts[6].clone()).unwrap().unwrap();
    assert_eq!(msg.msgtype(), "PATCH-DOC");
    assert_eq!(msg.header.num_buffers, 2);
    assert_eq!(msg.parts, parts);
    assert!(msg
        .content()
        .starts_with(br#"{"events":[{"kind":"ModelChanged""#));
    assert_eq!(
        msg.len_bytes(),
        parts.iter().map(|p| p.bytes().len()).sum::<usize>()
    );
    // The assembler is ready for the next message.
    let again = feed(&mut asm, frames(PULL_REQ))
        .pop()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again.msgtype(), "PULL-DOC-REQ");
}

#[test]
fn reqid_is_kept() {
    let mut asm = Assembler::new(MessageLimits::default());
    let parts = vec![
        text(r#"{"msgid":"p1","msgtype":"OK","reqid":"ABC"}"#),
        text("{}"),
        text("{}"),
    ];
    let msg = feed(&mut asm, parts).pop().unwrap().unwrap().unwrap();
    assert_eq!(msg.header.reqid.as_deref(), Some("ABC"));
}

#[test]
fn build_writes_bokeh_header_metadata_and_content() {
    let msg = Message::build("PATCH-DOC", "tether-1", None, r#"{"events":[]}"#.to_owned());
    assert_eq!(
        msg.parts[0],
        text(r#"{"msgid":"tether-1","msgtype":"PATCH-DOC"}"#)
    );
    assert_eq!(msg.parts[1], text("{}"));
    assert_eq!(msg.content(), br#"{"events":[]}"#);
    let reply = Message::build("OK", "m2", Some("m1"), "{}".to_owned());
    assert_eq!(
        reply.parts[0],
        text(r#"{"msgid":"m2","msgtype":"OK","reqid":"m1"}"#)
    );
    // What build writes, the assembler reads back.
    let mut asm = Assembler::new(MessageLimits::default());
    let back = feed(&mut asm, reply.parts.clone())
        .pop()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back, reply);
}

#[test]
fn content_of_a_hand_made_message_without_parts_is_empty() {
    let msg = Message {
        header: Message::build("OK", "x", None, String::new()).header,
        parts: vec![],
    };
    assert_eq!(msg.content(), b"");
}

fn first_error(parts: Vec<Part>, limits: MessageLimits) -> ProtocolError {
    let mut asm = Assembler::new(limits);
    for p in parts {
        if let Err(e) = asm.push(p) {
            // Poisoned from now on.
            assert!(matches!(asm.push(text("{}")), Err(ProtocolError::Poisoned)));
            return e;
        }
    }
    panic!("no error");
}

/// A predicate on the error a case must produce.
type Check = fn(&ProtocolError) -> bool;

#[test]
fn malformed_frames_are_errors() {
    let bin = Part::Binary(Bytes::from_static(b"\x00\x01"));
    let hdr = |s: &str| text(s);
    let limits = MessageLimits::default();
    let cases: Vec<(Vec<Part>, Check)> = vec![
        (vec![bin.clone()], |e| {
            matches!(e, ProtocolError::ExpectedText("message header"))
        }),
        (
            vec![hdr(r#"{"msgid":"a","msgtype":"X"}"#), bin.clone()],
            |e| matches!(e, ProtocolError::ExpectedText("metadata")),
        ),
        (
            vec![
                hdr(r#"{"msgid":"a","msgtype":"X"}"#),
                text("{}"),
                bin.clone(),
            ],
            |e| matches!(e, ProtocolError::ExpectedText("content")),
        ),
        (vec![hdr("not json")], |e| {
            matches!(e, ProtocolError::Json { .. })
        }),
        (vec![hdr(r#"{"msgtype":"X"}"#)], |e| {
            matches!(e, ProtocolError::Json { .. })
        }),
        (vec![hdr(r#"{"msgid":1,"msgtype":"X"}"#)], |e| {
            matches!(e, ProtocolError::Json { .. })
        }),
        (vec![hdr(r#"[1,2]"#)], |e| {
            matches!(e, ProtocolError::Json { .. })
        }),
        (
            vec![hdr(r#"{"msgid":"a","msgtype":"X","num_buffers":65}"#)],
            |e| {
                matches!(
                    e,
                    ProtocolError::TooManyBuffers {
                        declared: 65,
                        max: 64
                    }
                )
            },
        ),
        (
            vec![hdr(r#"{"msgid":"a","msgtype":"X","num_buffers":-1}"#)],
            |e| matches!(e, ProtocolError::TooManyBuffers { declared: 1, .. }),
        ),
        (
            vec![hdr(r#"{"msgid":"a","msgtype":"X","num_buffers":1.5}"#)],
            |e| matches!(e, ProtocolError::Json { .. }),
        ),
        (
            vec![hdr(
                r#"{"msgid":"a","msgtype":"X","num_buffers":99999999999999999999}"#,
            )],
            |e| matches!(e, ProtocolError::Json { .. }),
        ),
        // Buffer header that is not exactly {"id": ...}.
        (
            vec![
                hdr(r#"{"msgid":"a","msgtype":"X","num_buffers":1}"#),
                text("{}"),
                text("{}"),
                text(r#"{"id":"b","x":1}"#),
            ],
            |e| {
                matches!(
                    e,
                    ProtocolError::Json {
                        what: "buffer header",
                        ..
                    }
                )
            },
        ),
        // Text where the buffer payload belongs.
        (
            vec![
                hdr(r#"{"msgid":"a","msgtype":"X","num_buffers":1}"#),
                text("{}"),
                text("{}"),
                text(r#"{"id":"b"}"#),
                text("x"),
            ],
            |e| matches!(e, ProtocolError::ExpectedBinary),
        ),
        // num_buffers lies low: a buffer header frame is read as the next message header.
        (
            vec![
                hdr(r#"{"msgid":"a","msgtype":"X"}"#),
                text("{}"),
                text("{}"),
                text(r#"{"id":"b"}"#),
            ],
            |e| {
                matches!(
                    e,
                    ProtocolError::Json {
                        what: "message header",
                        ..
                    }
                )
            },
        ),
        // num_buffers lies high: the next message's header is read as a buffer header.
        (
            vec![
                hdr(r#"{"msgid":"a","msgtype":"X","num_buffers":1}"#),
                text("{}"),
                text("{}"),
                hdr(r#"{"msgid":"b","msgtype":"X"}"#),
            ],
            |e| {
                matches!(
                    e,
                    ProtocolError::Json {
                        what: "buffer header",
                        ..
                    }
                )
            },
        ),
    ];
    for (i, (parts, check)) in cases.into_iter().enumerate() {
        let e = first_error(parts, limits);
        assert!(check(&e), "case {i}: {e:?}");
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn message_size_is_bounded() {
    let limits = MessageLimits {
        max_buffers: 4,
        max_message_bytes: 100,
    };
    let big = Part::Binary(Bytes::from(vec![0u8; 80]));
    let parts = vec![
        text(r#"{"msgid":"a","msgtype":"X","num_buffers":1}"#),
        text("{}"),
        text("{}"),
        text(r#"{"id":"b"}"#),
        big,
    ];
    assert!(matches!(
        first_error(parts, limits),
        ProtocolError::TooLarge { max: 100 }
    ));
}

#[test]
fn arbitrary_frame_sequences_never_panic() {
    // A small deterministic generator (no extra crates): xorshift over a pool of frames.
    let pool = [
        text(r#"{"msgid":"a","msgtype":"PATCH-DOC","num_buffers":2}"#),
        text(r#"{"msgid":"a","msgtype":"OK"}"#),
        text("{}"),
        text(r#"{"id":"x"}"#),
        text(""),
        text("\u{0}garbage"),
        Part::Binary(Bytes::from_static(b"")),
        Part::Binary(Bytes::from_static(b"\xff\xfe")),
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..500 {
        let mut asm = Assembler::new(MessageLimits {
            max_buffers: 3,
            max_message_bytes: 1000,
        });
        for _ in 0..20 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let part = pool[(seed % pool.len() as u64) as usize].clone();
            if let Ok(Some(m)) = asm.push(part) {
                assert!(m.parts.len() >= 3);
                let _ = m.content();
            }
        }
    }
}
