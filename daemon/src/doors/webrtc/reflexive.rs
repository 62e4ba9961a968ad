//! The addresses viewers beyond a NAT reach the media sockets at, offered to them as
//! server-reflexive candidates beside the host ones:
//!
//! * `[webrtc] advertise`: addresses or names the operator knows (a router's public
//!   address with a port forward to `udp_port`, a VPN address), as MediaMTX's
//!   `webrtcAdditionalHosts`; names are resolved once, at start;
//! * `[webrtc] stun_server`: each socket's mapping learned from a STUN server at start
//!   (a binding request, retransmitted until [`STUN_TIMEOUT`]).
//!
//! Neither is needed on a LAN; a name that does not resolve or a server that does not
//! answer costs a warning, never the start.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

/// How long a STUN server gets to answer, per socket.
pub const STUN_TIMEOUT: Duration = Duration::from_millis(1500);
/// How often a binding request is sent again while waiting.
const RETRANSMIT: Duration = Duration::from_millis(300);

/// A public address and the local socket it leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reflexive {
    /// Where viewers send.
    pub public: SocketAddr,
    /// The media socket that receives it.
    pub base: SocketAddr,
}

/// The reflexive addresses of `sockets`: every advertised address on each socket's port,
/// and each socket's mapping as `stun_server` sees it.
pub async fn discover(
    sockets: &[UdpSocket],
    advertise: &[String],
    stun_server: Option<&str>,
) -> Vec<Reflexive> {
    let bases: Vec<SocketAddr> = sockets.iter().filter_map(|s| s.local_addr().ok()).collect();
    let mut found = Vec::new();
    for entry in advertise {
        for ip in resolve_ips(entry).await {
            for base in bases.iter().filter(|b| b.is_ipv4() == ip.is_ipv4()) {
                found.push(Reflexive {
                    public: SocketAddr::new(ip, base.port()),
                    base: *base,
                });
            }
        }
    }
    if let Some(server) = stun_server {
        match tokio::net::lookup_host(server)
            .await
            .map(|mut a| a.find(SocketAddr::is_ipv4))
        {
            Ok(Some(server)) => {
                // Every socket asks at once: a silent server costs one timeout, not one
                // per interface.
                let asked = sockets.iter().filter_map(|socket| {
                    let base = socket.local_addr().ok()?;
                    Some(async move { (base, mapped_address(socket, server).await) })
                });
                for (base, public) in futures_util::future::join_all(asked).await {
                    match public {
                        Some(public) if public != base => found.push(Reflexive { public, base }),
                        Some(_) => {}
                        None => tracing::warn!(%base, %server, "no answer from the STUN server"),
                    }
                }
            }
            Ok(None) => tracing::warn!(server, "the STUN server has no IPv4 address"),
            Err(e) => tracing::warn!(server, error = %e, "cannot resolve the STUN server"),
        }
    }
    found.dedup();
    for r in &found {
        tracing::info!(public = %r.public, base = %r.base, "reflexive candidate");
    }
    found
}

/// The addresses `entry` names: itself if it is one, else its DNS names (none, with a
/// warning, when it does not resolve).
async fn resolve_ips(entry: &str) -> Vec<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return vec![ip];
    }
    match tokio::net::lookup_host((entry, 0)).await {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(e) => {
            tracing::warn!(name = entry, error = %e, "cannot resolve an advertised name");
            Vec::new()
        }
    }
}

/// Asks `server` which address `socket`'s datagrams come from; `None` without an answer
/// within [`STUN_TIMEOUT`].
pub async fn mapped_address(socket: &UdpSocket, server: SocketAddr) -> Option<SocketAddr> {
    let mut trans = [0u8; 12];
    getrandom::fill(&mut trans).ok()?;
    let request = binding_request(trans);
    let deadline = Instant::now() + STUN_TIMEOUT;
    let mut buf = vec![0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        socket.send_to(&request, server).await.ok()?;
        let wait = RETRANSMIT.min(deadline - now);
        let answer = tokio::time::timeout(wait, async {
            loop {
                let (n, from) = socket.recv_from(&mut buf).await.ok()?;
                if from == server
                    && let Some(mapped) = binding_response(&buf[..n], trans)
                {
                    return Some(mapped);
                }
            }
        })
        .await;
        if let Ok(mapped) = answer {
            return mapped;
        }
    }
}

/// The magic cookie of every STUN message (RFC 8489).
const COOKIE: u32 = 0x2112_a442;
/// The attributes that carry the mapped address: XOR-MAPPED-ADDRESS, and the older
/// MAPPED-ADDRESS some servers still send alone.
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const MAPPED_ADDRESS: u16 = 0x0001;

/// A binding request with transaction id `trans` and no attributes (no credentials: a
/// public STUN server answers anyone).
fn binding_request(trans: [u8; 12]) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..2].copy_from_slice(&0x0001u16.to_be_bytes());
    out[4..8].copy_from_slice(&COOKIE.to_be_bytes());
    out[8..].copy_from_slice(&trans);
    out
}

/// The mapped address in `msg` if it is a binding success response to transaction
/// `trans`.
fn binding_response(msg: &[u8], trans: [u8; 12]) -> Option<SocketAddr> {
    let header = msg.get(..20)?;
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if header[..2] != [0x01, 0x01]
        || header[4..8] != COOKIE.to_be_bytes()
        || header[8..20] != trans
        || msg.len() < 20 + len
    {
        return None;
    }
    let mut attrs = &msg[20..20 + len];
    let mut plain = None;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let size = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + size)?;
        match kind {
            XOR_MAPPED_ADDRESS => return address(value, Some(trans)),
            MAPPED_ADDRESS => plain = address(value, None),
            _ => {}
        }
        // Attributes are padded to four bytes.
        attrs = attrs
            .get((4 + size).next_multiple_of(4)..)
            .unwrap_or_default();
    }
    plain
}

/// An address attribute's value; XOR-ed with the cookie (and `trans`, for IPv6) when
/// `xor` carries the transaction id.
fn address(value: &[u8], xor: Option<[u8; 12]>) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let mut port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]);
    // XOR-ed: the port with the cookie's high half, the address with the cookie and then
    // the transaction id.
    let mut mask = [0u8; 16];
    if let Some(trans) = xor {
        port ^= (COOKIE >> 16) as u16;
        mask[..4].copy_from_slice(&COOKIE.to_be_bytes());
        mask[4..].copy_from_slice(&trans);
    }
    let ip = match family {
        0x01 => {
            let b: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            let m: [u8; 4] = mask[..4].try_into().ok()?;
            IpAddr::from(std::array::from_fn::<u8, 4, _>(|i| b[i] ^ m[i]))
        }
        0x02 => {
            let b: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            IpAddr::from(std::array::from_fn::<u8, 16, _>(|i| b[i] ^ mask[i]))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRANS: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    /// A success response carrying `attrs`.
    fn response(trans: [u8; 12], attrs: &[u8]) -> Vec<u8> {
        let mut out = vec![0x01, 0x01];
        out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        out.extend_from_slice(&COOKIE.to_be_bytes());
        out.extend_from_slice(&trans);
        out.extend_from_slice(attrs);
        out
    }

    #[test]
    fn a_request_is_a_bare_binding_request() {
        let r = binding_request(TRANS);
        assert_eq!(&r[..8], &[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(&r[8..], &TRANS);
    }

    #[test]
    fn reads_the_xor_mapped_address_after_other_attributes() {
        // 203.0.113.9:40000 XOR-ed with the cookie; a SOFTWARE attribute (padded) first.
        let mut attrs = vec![
            0x80, 0x22, 0x00, 0x05, b'f', b'o', b'c', b'u', b's', 0, 0, 0,
        ];
        attrs.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
        attrs.extend_from_slice(&(40000u16 ^ 0x2112).to_be_bytes());
        attrs.extend_from_slice(&(u32::from_be_bytes([203, 0, 113, 9]) ^ COOKIE).to_be_bytes());
        assert_eq!(
            binding_response(&response(TRANS, &attrs), TRANS),
            Some("203.0.113.9:40000".parse().unwrap())
        );
    }

    #[test]
    fn reads_a_plain_mapped_address_and_rejects_other_answers() {
        let attrs = [
            0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x9c, 0x40, 198, 51, 100, 4,
        ];
        assert_eq!(
            binding_response(&response(TRANS, &attrs), TRANS),
            Some("198.51.100.4:40000".parse().unwrap())
        );
        assert_eq!(
            binding_response(&response([0; 12], &attrs), TRANS),
            None,
            "another transaction"
        );
        assert_eq!(
            binding_response(&response(TRANS, &attrs)[..25], TRANS),
            None,
            "cut short"
        );
        assert_eq!(
            binding_response(&response(TRANS, &[]), TRANS),
            None,
            "no address"
        );
    }
}
