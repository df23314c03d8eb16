extern crate std;
use std::{vec, vec::Vec};

use super::*;
use crate::limits::PATH_LEN;

fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: test helper over plain ABI structs.
    unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

fn header(kind: u32) -> EventHeader {
    EventHeader {
        kind,
        cpu: 1,
        tgid: 42,
        tid: 43,
        ktime_ns: 1_000,
    }
}

fn file_event(path: &[u8]) -> FileEvent {
    let mut e = FileEvent {
        header: header(EVENT_FILE),
        op: FILE_OP_OPENAT,
        entry_id: 7,
        dfd: -100,
        open_flags: 0,
        ret: 3,
        path_len: path.len() as u32,
        path_truncated: 0,
        matched_by: 0,
        base_dev: 0,
        base_ino: 0,
        path: [0; PATH_LEN],
    };
    e.path[..path.len()].copy_from_slice(path);
    e
}

#[test]
fn decodes_a_file_event() {
    let raw = bytes_of(&file_event(b"/etc/localtime"));
    let Event::File(e) = decode(&raw).expect("decodes") else {
        panic!("wrong kind")
    };
    assert_eq!(e.path_bytes(), b"/etc/localtime");
    assert_eq!(e.header.tgid, 42);
    assert_eq!(e.entry_id, 7);
}

#[test]
fn decodes_a_connect_event() {
    let e = ConnectEvent {
        header: header(EVENT_CONNECT),
        fd: 3,
        ret: -115,
        family: AF_INET,
        port: 8080,
        flags: 0,
        addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    };
    let Event::Connect(d) = decode(&bytes_of(&e)).expect("decodes") else {
        panic!("wrong kind")
    };
    assert_eq!(d, e);
}

#[test]
fn rejects_a_record_shorter_than_the_header() {
    assert_eq!(
        decode(&[1, 0, 0]).unwrap_err(),
        DecodeError::ShortHeader { len: 3, need: 24 }
    );
}

#[test]
fn rejects_a_truncated_payload() {
    let raw = bytes_of(&file_event(b"/etc/localtime"));
    let err = decode(&raw[..raw.len() - 1]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Truncated {
            kind: EVENT_FILE,
            len: raw.len() - 1,
            need: raw.len()
        }
    );
}

#[test]
fn rejects_an_oversized_record() {
    let mut raw = bytes_of(&file_event(b"/etc/localtime"));
    raw.extend_from_slice(&[0; 8]);
    let err = decode(&raw).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Oversized {
                kind: EVENT_FILE,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn rejects_a_string_length_past_its_array() {
    let mut e = file_event(b"/etc/localtime");
    e.path_len = PATH_LEN as u32;
    let err = decode(&bytes_of(&e)).unwrap_err();
    assert_eq!(
        err,
        DecodeError::BadLength {
            kind: EVENT_FILE,
            field: "path_len",
            value: PATH_LEN as u32,
            cap: PATH_LEN
        }
    );
}

#[test]
fn rejects_an_unknown_kind() {
    let raw = bytes_of(&header(999));
    assert_eq!(
        decode(&raw).unwrap_err(),
        DecodeError::UnknownKind { kind: 999, len: 24 }
    );
}

#[test]
fn exec_argv_stops_at_the_filled_slots() {
    let mut e = ExecEvent {
        header: header(EVENT_EXEC),
        uid: 1000,
        gid: 1000,
        argc: 2,
        flags: 0,
        argv_truncated_mask: 0,
        filename_len: 9,
        filename: [0; PATH_LEN],
        argv: [[0; crate::ARGV_SLOT_LEN]; crate::ARGV_SLOTS],
    };
    e.filename[..9].copy_from_slice(b"/bin/node");
    e.argv[0][..4].copy_from_slice(b"node");
    e.argv[1][..6].copy_from_slice(b"cli.js");
    let Event::Exec(d) = decode(&bytes_of(&e)).expect("decodes") else {
        panic!("wrong kind")
    };
    let argv: Vec<&[u8]> = d.argv_bytes().collect();
    assert_eq!(argv, [b"node".as_slice(), b"cli.js".as_slice()]);
    assert_eq!(d.filename_bytes(), b"/bin/node");
}

#[test]
fn every_kind_rejects_truncated_and_oversized_records() {
    let sizes = [
        (EVENT_EXEC, size_of::<ExecEvent>()),
        (EVENT_FORK, size_of::<ForkEvent>()),
        (EVENT_EXIT, size_of::<ExitEvent>()),
        (EVENT_FILE, size_of::<FileEvent>()),
        (EVENT_ENV, size_of::<EnvEvent>()),
        (EVENT_ENV_AT_EXEC, size_of::<ExecEnvEvent>()),
        (EVENT_CONNECT, size_of::<ConnectEvent>()),
        (EVENT_CONNECT_UNIX, size_of::<UnixConnectEvent>()),
        (EVENT_CONNECT_OUTCOME, size_of::<ConnectOutcomeEvent>()),
        (EVENT_UDP_SEND, size_of::<UdpSendEvent>()),
        (EVENT_DNS_ANSWER, size_of::<DnsAnswerEvent>()),
        (EVENT_EXEC_MAPPED, size_of::<ExecMappedEvent>()),
    ];
    for (kind, size) in sizes {
        let mut raw = vec![0u8; size];
        raw[..4].copy_from_slice(&kind.to_ne_bytes());
        assert!(
            decode(&raw).is_ok(),
            "kind {kind}: an all-zero record of the right size decodes"
        );
        assert_eq!(
            decode(&raw[..size - 1]).unwrap_err(),
            DecodeError::Truncated {
                kind,
                len: size - 1,
                need: size
            }
        );
        raw.push(0);
        assert_eq!(
            decode(&raw).unwrap_err(),
            DecodeError::Oversized {
                kind,
                len: size + 1,
                need: size
            }
        );
    }
}

#[test]
fn host_calls_decode_with_their_interface_name_and_reject_unknown_calls() {
    let size = size_of::<HostCallEvent>();
    let mut raw = vec![0u8; size];
    raw[..4].copy_from_slice(&EVENT_HOST_CALL.to_ne_bytes());
    let call_at = size_of::<EventHeader>();
    let ifname_len_at = call_at + 12;
    let ifname_at = call_at + 16;
    raw[call_at..call_at + 4].copy_from_slice(&HOST_CALL_IFHWADDR.to_ne_bytes());
    raw[ifname_len_at..ifname_len_at + 4].copy_from_slice(&4u32.to_ne_bytes());
    raw[ifname_at..ifname_at + 4].copy_from_slice(b"eth0");
    let Event::HostCall(e) = decode(&raw).expect("decodes") else {
        panic!("wrong kind")
    };
    assert_eq!(e.ifname_bytes(), b"eth0");
    assert!(decode(&raw[..size - 1]).is_err());
    // A name length that reaches past the array is refused, not sliced.
    raw[ifname_len_at..ifname_len_at + 4].copy_from_slice(&16u32.to_ne_bytes());
    assert!(matches!(
        decode(&raw),
        Err(DecodeError::BadLength {
            field: "ifname_len",
            ..
        })
    ));
    raw[ifname_len_at..ifname_len_at + 4].copy_from_slice(&0u32.to_ne_bytes());
    for call in [0u32, 4, u32::MAX] {
        raw[call_at..call_at + 4].copy_from_slice(&call.to_ne_bytes());
        assert_eq!(
            decode(&raw).unwrap_err(),
            DecodeError::BadField {
                kind: EVENT_HOST_CALL,
                field: "call",
                value: call
            }
        );
    }
}

#[test]
fn block_events_decode_and_reject_unknown_verdicts_and_rules() {
    let mut e = BlockEvent {
        header: header(EVENT_BLOCK),
        rule: 2,
        verdict: BLOCK_VERDICT_BLOCKED,
        net: BLOCK_NET_CONNECT,
        tree: 10,
        held: 0b11,
        family: AF_INET,
        port: 443,
        addr: [0; 16],
        fed_ns: [0; BLOCK_SLOTS],
    };
    e.fed_ns[1] = 5;
    let raw = bytes_of(&e);
    let Event::Block(d) = decode(&raw).expect("decodes") else {
        panic!("wrong kind")
    };
    assert_eq!((d.rule, d.held, d.fed_ns[1]), (2, 0b11, 5));
    assert!(decode(&raw[..raw.len() - 1]).is_err());
    e.verdict = 0;
    assert!(matches!(
        decode(&bytes_of(&e)),
        Err(DecodeError::BadField {
            field: "verdict",
            ..
        })
    ));
    e.verdict = BLOCK_VERDICT_WOULD_BLOCK;
    e.rule = MAX_BLOCK_RULES;
    assert!(matches!(
        decode(&bytes_of(&e)),
        Err(DecodeError::BadLength { field: "rule", .. })
    ));
}
