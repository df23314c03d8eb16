//! A fake DNS resolver for the root tests: it answers A queries on a loopback address,
//! port 53, with what a closure says for each name, until the test process exits.

use std::net::{Ipv4Addr, UdpSocket};

use simple_dns::{
    CLASS, Packet, QTYPE, ResourceRecord, TYPE,
    rdata::{A, RData},
};

/// Serves A queries on `addr:53`: `answer(name)` gives the address and TTL (s) for
/// each question's name (as the query wrote it, with or without the final dot).
pub fn serve_a(addr: &str, answer: impl Fn(&str) -> (Ipv4Addr, u32) + Send + 'static) {
    let socket = UdpSocket::bind((addr, 53))
        .unwrap_or_else(|e| panic!("bind a fake resolver on {addr}:53: {e}"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            let Ok(query) = Packet::parse(&buf[..n]) else {
                continue;
            };
            let mut reply = query.into_reply();
            let answers: Vec<_> = reply
                .questions
                .iter()
                .filter(|q| q.qtype == QTYPE::TYPE(TYPE::A))
                .map(|q| {
                    let (address, ttl) = answer(&q.qname.to_string());
                    ResourceRecord::new(
                        q.qname.clone(),
                        CLASS::IN,
                        ttl,
                        RData::A(A {
                            address: u32::from(address),
                        }),
                    )
                })
                .collect();
            reply.answers.extend(answers);
            if let Ok(bytes) = reply.build_bytes_vec() {
                let _ = socket.send_to(&bytes, from);
            }
        }
    });
}
