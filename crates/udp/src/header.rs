//! What travels in a datagram: the header every `udp send` datagram starts with, and the
//! discovery probe and answer. Pure byte layouts, no sockets.
//!
//! All integers are big-endian. A datagram that does not start with the right magic is not
//! ours (an iperf or socat peer, a stray packet): the receiver counts it as foreign instead of
//! guessing at its contents.

use std::net::SocketAddr;

/// The first four bytes of every measured datagram.
pub const MAGIC: [u8; 4] = *b"IOMu";

/// Bytes taken by [`Header`]: magic (4), run id (8), sequence number (8), send time (8).
pub const HEADER_LEN: usize = 28;

/// The largest UDP payload over IPv4: 65,535 - 20 (IP header) - 8 (UDP header).
pub const MAX_PAYLOAD_V4: usize = 65_507;

/// The largest UDP payload over IPv6 without jumbograms: 65,535 - 8 (UDP header); the IPv6
/// header is not counted in its payload length.
pub const MAX_PAYLOAD_V6: usize = 65_527;

/// The header of a measured datagram.
///
/// `sent_ns` is the sender's `CLOCK_REALTIME` (nanoseconds since the Unix epoch, from
/// `SystemTime`), read just before the send. It is the one clock std exposes whose values
/// mean the same in every process — and in every network namespace — of a host, so a
/// receiver on the same host gets one-way latency as its own realtime minus `sent_ns`. It is
/// meaningless across hosts unless their clocks are synchronised, and a clock step during a
/// run skews it (negative latencies are recorded as 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Chosen at random by each `udp send` run, so a receiver can tell two senders (or two
    /// runs of one) apart.
    pub run_id: u64,
    /// 0 for the first datagram of the run, then +1 for each.
    pub seq: u64,
    /// Send time, nanoseconds since the Unix epoch (`CLOCK_REALTIME`).
    pub sent_ns: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`HEADER_LEN`]: the sender checks `--size` first.
    pub fn encode(&self, buf: &mut [u8]) {
        buf[..4].copy_from_slice(&MAGIC);
        buf[4..12].copy_from_slice(&self.run_id.to_be_bytes());
        buf[12..20].copy_from_slice(&self.seq.to_be_bytes());
        buf[20..28].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads a header from the start of a datagram; `None` if it is too short or lacks the
    /// magic (a foreign datagram).
    pub fn decode(buf: &[u8]) -> Option<Header> {
        if buf.len() < HEADER_LEN || buf[..4] != MAGIC {
            return None;
        }
        Some(Header {
            run_id: be_u64(&buf[4..12]),
            seq: be_u64(&buf[12..20]),
            sent_ns: be_u64(&buf[20..28]),
        })
    }
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

/// The first four bytes of a discovery message.
pub const DISCOVERY_MAGIC: [u8; 4] = *b"IOMd";

const KIND_PROBE: u8 = 1;
const KIND_ANSWER: u8 = 2;

/// A discovery message: `udp discover --probe` sends probes, `--respond` answers each one to
/// the probe's source address.
///
/// Layout: magic (4), kind (1), nonce (8); an answer then carries its service address as
/// UTF-8 text (`IP:PORT`), length-prefixed by one byte. Text, so that an IPv6 address with
/// its brackets travels as it is printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// "Who is there?" The nonce ties answers to this prober's run.
    Probe {
        /// Chosen at random per prober run.
        nonce: u64,
    },
    /// "Here: connect to `service`." An unspecified IP (0.0.0.0 or ::) means "the address
    /// this answer came from".
    Answer {
        /// The probe's nonce, echoed.
        nonce: u64,
        /// The responder's TCP service address.
        service: SocketAddr,
    },
}

impl Discovery {
    /// The message as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = DISCOVERY_MAGIC.to_vec();
        match self {
            Discovery::Probe { nonce } => {
                out.push(KIND_PROBE);
                out.extend_from_slice(&nonce.to_be_bytes());
            }
            Discovery::Answer { nonce, service } => {
                out.push(KIND_ANSWER);
                out.extend_from_slice(&nonce.to_be_bytes());
                let text = service.to_string();
                // A socket address prints in at most 55 bytes: the length fits in one byte.
                out.push(text.len() as u8);
                out.extend_from_slice(text.as_bytes());
            }
        }
        out
    }

    /// Parses a message; `None` for anything that is not a well-formed discovery message.
    pub fn decode(buf: &[u8]) -> Option<Discovery> {
        if buf.len() < 13 || buf[..4] != DISCOVERY_MAGIC {
            return None;
        }
        let nonce = be_u64(&buf[5..13]);
        match buf[4] {
            KIND_PROBE if buf.len() == 13 => Some(Discovery::Probe { nonce }),
            KIND_ANSWER => {
                let len = *buf.get(13)? as usize;
                let text = buf.get(14..14 + len)?;
                if buf.len() != 14 + len {
                    return None;
                }
                let service = std::str::from_utf8(text).ok()?.parse().ok()?;
                Some(Discovery::Answer { nonce, service })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_leaves_the_payload_alone() {
        let h = Header {
            run_id: 0x0102_0304_0506_0708,
            seq: u64::MAX - 1,
            sent_ns: 1_700_000_000_123_456_789,
        };
        let mut buf = vec![0xAAu8; 100];
        h.encode(&mut buf);
        assert_eq!(&buf[..4], b"IOMu");
        assert_eq!(&buf[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(buf[HEADER_LEN..].iter().all(|&b| b == 0xAA));
        assert_eq!(Header::decode(&buf), Some(h));
        assert_eq!(Header::decode(&buf[..HEADER_LEN]), Some(h));
    }

    #[test]
    fn short_or_foreign_datagrams_have_no_header() {
        let mut buf = [0u8; HEADER_LEN];
        Header {
            run_id: 1,
            seq: 2,
            sent_ns: 3,
        }
        .encode(&mut buf);
        assert_eq!(Header::decode(&buf[..HEADER_LEN - 1]), None);
        assert_eq!(Header::decode(b""), None);
        buf[0] = b'X';
        assert_eq!(Header::decode(&buf), None);
        // iperf 2's UDP payload starts with a 32-bit sequence number.
        assert_eq!(Header::decode(&[0, 0, 0, 1, 0, 0, 0, 0][..]), None);
    }

    #[test]
    fn discovery_messages_round_trip() {
        for m in [
            Discovery::Probe { nonce: 42 },
            Discovery::Answer {
                nonce: 7,
                service: "10.1.2.3:9990".parse().unwrap(),
            },
            Discovery::Answer {
                nonce: u64::MAX,
                service: "[ff02::1:2]:65535".parse().unwrap(),
            },
        ] {
            assert_eq!(Discovery::decode(&m.encode()), Some(m));
        }
    }

    #[test]
    fn malformed_discovery_messages_are_refused() {
        let answer = Discovery::Answer {
            nonce: 7,
            service: "10.1.2.3:9990".parse().unwrap(),
        }
        .encode();
        assert_eq!(Discovery::decode(&answer[..answer.len() - 1]), None);
        let mut longer = answer.clone();
        longer.push(b'0');
        assert_eq!(Discovery::decode(&longer), None);
        let mut probe = Discovery::Probe { nonce: 1 }.encode();
        probe.push(0);
        assert_eq!(Discovery::decode(&probe), None);
        let mut bad_kind = answer;
        bad_kind[4] = 9;
        assert_eq!(Discovery::decode(&bad_kind), None);
        assert_eq!(Discovery::decode(b"IOMu0000000000000"), None);
    }
}
