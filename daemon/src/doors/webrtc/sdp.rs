//! SDP checks and edits around str0m: what the offer must contain, what of it the ICE
//! agent may be handed, what the browser's mDNS candidates need, and the track ids the
//! answer announces.

use str0m::change::SdpOffer;

use super::OfferError;

/// Largest SDP offer accepted, in bytes (browsers send 3–8 KiB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Longest SDP line accepted, in bytes. The longest lines real peers send (Chromium's
/// `a=fmtp`, GStreamer's `a=ssrc`) stay under 200.
pub const MAX_SDP_LINE_BYTES: usize = 1024;

/// Most `a=candidate` lines accepted in one SDP: each remote candidate becomes ICE
/// candidate pairs and connectivity checks (a browser sends a handful, non-trickle).
pub const MAX_CANDIDATES: usize = 64;

/// RFC 8839 lets `ice-ufrag` be 4–256 ice-chars and `ice-pwd` 22–256. str0m's ICE agent
/// writes the peer's ufrag, a colon and its own 16-character ufrag into the USERNAME of
/// its checks, and panics on a USERNAME over 128 bytes (`is` 0.12's STUN encoder): a
/// longer ufrag took the whole WebRTC server down. So a ufrag is 4–111 characters here;
/// real peers send 4 (Chromium) to 32 (GStreamer).
const UFRAG_CHARS: std::ops::RangeInclusive<usize> = 4..=(STUN_USERNAME_MAX - 1 - LOCAL_UFRAG);
const PWD_CHARS: std::ops::RangeInclusive<usize> = 22..=256;
/// The longest USERNAME str0m's STUN encoder writes, and the length of its own ufrag.
const STUN_USERNAME_MAX: usize = 128;
const LOCAL_UFRAG: usize = 16;

/// An offer that passed the checks, ready for str0m.
#[derive(Debug)]
pub struct CheckedOffer {
    pub offer: SdpOffer,
    /// The `a=mid` of each video m-line, in order: context first, then source.
    pub video_mids: Vec<String>,
}

/// Checks an SDP offer and prepares it for str0m.
///
/// Candidates with mDNS `.local` addresses are dropped: they cannot be resolved here, and
/// the browser's connectivity checks reach us anyway, becoming peer-reflexive candidates.
pub fn check_offer(sdp: &str) -> Result<CheckedOffer, OfferError> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(OfferError::Malformed(format!(
            "offer is over {MAX_SDP_BYTES} bytes"
        )));
    }
    if !sdp.trim_start().starts_with("v=0") {
        return Err(OfferError::Malformed("SDP must start with v=0".into()));
    }
    check_ice(sdp)?;
    let mut cleaned = String::with_capacity(sdp.len());
    let mut video_mids = Vec::new();
    let mut in_video = false;
    let mut video_lines = 0;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(media) = line.strip_prefix("m=") {
            in_video = media.starts_with("video ");
            video_lines += usize::from(in_video);
        }
        if in_video && let Some(mid) = line.strip_prefix("a=mid:") {
            video_mids.push(mid.trim().to_string());
        }
        if is_mdns_candidate(line) {
            continue;
        }
        cleaned.push_str(line);
        cleaned.push_str("\r\n");
    }
    if video_lines == 0 {
        return Err(OfferError::NoVideo);
    }
    if video_mids.len() != video_lines {
        return Err(OfferError::Malformed(
            "every video m-line needs an a=mid".into(),
        ));
    }
    let offer = SdpOffer::from_sdp_string(&cleaned)
        .map_err(|e| OfferError::Malformed(one_line(&e.to_string())))?;
    Ok(CheckedOffer { offer, video_mids })
}

/// Checks what an SDP (an offer, or a WHIP endpoint's answer) hands to the ICE agent and
/// the DTLS handshake, before str0m sees it: line lengths, `ice-ufrag` and `ice-pwd` (RFC
/// 8839 §5.4), each `a=candidate` (§5.1) and `a=fingerprint` (RFC 8122).
pub fn check_ice(sdp: &str) -> Result<(), OfferError> {
    let bad = |what: String| Err(OfferError::Malformed(what));
    let mut candidates = 0;
    for (n, line) in sdp.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if let Some(ufrag) = line.strip_prefix("a=ice-ufrag:") {
            check_ice_chars("ice-ufrag", ufrag, UFRAG_CHARS)?;
        } else if let Some(pwd) = line.strip_prefix("a=ice-pwd:") {
            check_ice_chars("ice-pwd", pwd, PWD_CHARS)?;
        } else if let Some(candidate) = line.strip_prefix("a=candidate:") {
            candidates += 1;
            if candidates > MAX_CANDIDATES {
                return bad(format!("more than {MAX_CANDIDATES} candidates"));
            }
            check_candidate(candidate)?;
        } else if let Some(fingerprint) = line.strip_prefix("a=fingerprint:") {
            check_fingerprint(fingerprint)?;
        }
        if line.len() > MAX_SDP_LINE_BYTES {
            return bad(format!(
                "line {} is {} bytes long (at most {MAX_SDP_LINE_BYTES})",
                n + 1,
                line.len()
            ));
        }
    }
    Ok(())
}

/// ice-char = ALPHA / DIGIT / "+" / "/".
fn is_ice_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '+' || c == '/'
}

fn check_ice_chars(
    name: &str,
    value: &str,
    len: std::ops::RangeInclusive<usize>,
) -> Result<(), OfferError> {
    let value = value.trim_end();
    if !len.contains(&value.len()) {
        return Err(OfferError::Malformed(format!(
            "a={name} is {} characters long (here {} to {})",
            value.len(),
            len.start(),
            len.end()
        )));
    }
    if let Some(c) = value.chars().find(|c| !is_ice_char(*c)) {
        return Err(OfferError::Malformed(format!(
            "a={name} holds {c:?} (RFC 8839: letters, digits, + and / only)"
        )));
    }
    Ok(())
}

/// `<foundation> <component> <transport> <priority> <address> <port> typ <type> ...`:
/// foundation 1–32 ice-chars, component 1–3 digits (1–256), priority 1–10 digits (a u32),
/// a port, one of the four types; what follows are name-value pairs.
fn check_candidate(candidate: &str) -> Result<(), OfferError> {
    let bad = |why: &str| {
        Err(OfferError::Malformed(format!(
            "a=candidate: {why} in `{}`",
            candidate.chars().take(80).collect::<String>()
        )))
    };
    let fields: Vec<&str> = candidate.split_ascii_whitespace().collect();
    let [
        foundation,
        component,
        transport,
        priority,
        address,
        port,
        typ,
        kind,
        rest @ ..,
    ] = fields.as_slice()
    else {
        return bad("fewer than 8 fields");
    };
    if foundation.is_empty() || foundation.len() > 32 || !foundation.chars().all(is_ice_char) {
        return bad("the foundation is not 1 to 32 ice-chars");
    }
    if !(1..=3).contains(&component.len())
        || !component
            .parse::<u16>()
            .is_ok_and(|c| (1..=256).contains(&c))
    {
        return bad("the component id is not 1 to 256");
    }
    if transport.is_empty()
        || !transport
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return bad("the transport is not a token");
    }
    if priority.len() > 10 || priority.parse::<u32>().is_err() {
        return bad("the priority is not a 32-bit number");
    }
    if address.is_empty()
        || !address
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".:-".contains(c))
    {
        return bad("the address is neither an IP address nor a host name");
    }
    if port.parse::<u16>().is_err() {
        return bad("the port is not 0 to 65535");
    }
    if *typ != "typ" || !["host", "srflx", "prflx", "relay"].contains(kind) {
        return bad("no `typ host|srflx|prflx|relay`");
    }
    if rest.len() % 2 != 0 {
        return bad("an extension name without a value");
    }
    Ok(())
}

/// `<hash-func> <hex pairs joined by :>`: at most SHA-512's 64 bytes.
fn check_fingerprint(fingerprint: &str) -> Result<(), OfferError> {
    let bad = || {
        Err(OfferError::Malformed(
            "a=fingerprint is not `<hash> XX:XX:...` of at most 64 bytes".into(),
        ))
    };
    let Some((hash, hex)) = fingerprint.trim_end().split_once(' ') else {
        return bad();
    };
    if hash.is_empty()
        || hash.len() > 16
        || !hash.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return bad();
    }
    let pairs: Vec<&str> = hex.split(':').collect();
    if pairs.len() > 64
        || !pairs
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return bad();
    }
    Ok(())
}

fn is_mdns_candidate(line: &str) -> bool {
    // a=candidate:<foundation> <component> <proto> <priority> <address> <port> typ ...
    line.strip_prefix("a=candidate:")
        .and_then(|c| c.split_ascii_whitespace().nth(4))
        .is_some_and(|addr| addr.ends_with(".local"))
}

fn one_line(s: &str) -> String {
    let first = s.lines().next().unwrap_or("");
    let mut out: String = first.chars().take(200).collect();
    if out.is_empty() {
        out = "unparseable SDP".into();
    }
    out
}

/// Finishes str0m's answer for every client that may read it:
///
/// - the n-th video m-line announces track id `names[n]` in stream `focusd` (str0m picks
///   random ids; viewers rely on `context` / `source`);
/// - the daemon's candidates stand in every m-section, not only the first bundled one,
///   each section closed by `a=end-of-candidates`: bundle makes the rest redundant, but
///   some stacks (aiortc) read the candidates of the last section and would never connect;
/// - `a=ice-options:trickle` is dropped: the daemon never trickles, it sends every
///   candidate in the answer.
pub fn finish_answer(answer: &str, names: &[&str]) -> String {
    let candidates: Vec<&str> = answer
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    let mut out = String::with_capacity(answer.len() + 256 * (candidates.len() + 1));
    let mut video_index: Option<usize> = None;
    let mut seen_video = 0;
    let mut in_media = false;
    let close_section = |out: &mut String| {
        for c in &candidates {
            out.push_str(c);
            out.push_str("\r\n");
        }
        out.push_str("a=end-of-candidates\r\n");
    };
    for line in answer.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty()
            || line.starts_with("a=candidate:")
            || line == "a=end-of-candidates"
            || line == "a=ice-options:trickle"
        {
            continue;
        }
        if let Some(media) = line.strip_prefix("m=") {
            if in_media {
                close_section(&mut out);
            }
            in_media = true;
            video_index = media.starts_with("video ").then(|| {
                seen_video += 1;
                seen_video - 1
            });
        }
        let name = video_index.and_then(|i| names.get(i));
        match name {
            Some(name) if line.starts_with("a=msid:") => {
                out.push_str(&format!("a=msid:focusd {name}\r\n"));
            }
            Some(name) if line.starts_with("a=ssrc:") && line.contains(" msid:") => {
                let head = line.split(" msid:").next().unwrap_or(line);
                out.push_str(&format!("{head} msid:focusd {name}\r\n"));
            }
            _ => {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
    }
    if in_media {
        close_section(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offer as Chromium makes it for two recvonly video transceivers and a DataChannel.
    const CHROME_OFFER: &str = include_str!("../../../../tests/data/chrome-offer.sdp");

    #[test]
    fn accepts_chrome_offer_and_drops_mdns() {
        let checked = check_offer(CHROME_OFFER).unwrap();
        assert_eq!(checked.video_mids, vec!["0", "1"]);
        assert!(!checked.offer.to_sdp_string().contains(".local"));
    }

    #[test]
    fn rejects_bad_offers() {
        assert!(matches!(
            check_offer("hello"),
            Err(OfferError::Malformed(_))
        ));
        let audio_only = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
        assert!(matches!(check_offer(audio_only), Err(OfferError::NoVideo)));
        let garbage = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\nthis is not sdp\r\n";
        let err = check_offer(garbage).unwrap_err();
        assert!(matches!(err, OfferError::Malformed(_)), "{err:?}");
        assert!(!err.to_string().contains('\n'));
    }

    /// Chromium's offer with `line` in place of the first line starting with `prefix`.
    fn with_line(prefix: &str, line: &str) -> String {
        let mut done = false;
        CHROME_OFFER
            .lines()
            .map(|l| {
                if !done && l.starts_with(prefix) {
                    done = true;
                    line.to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    #[test]
    fn refuses_what_the_ice_agent_must_not_be_handed() {
        // The fuzzer's case: a 40,017-character ufrag made str0m's ICE agent panic.
        let long = format!("a=ice-ufrag:{}", "a".repeat(40_017));
        let cases = [
            (
                "a=ice-ufrag:",
                long.as_str(),
                "a=ice-ufrag is 40017 characters long",
            ),
            (
                "a=mid:",
                &*format!("a=mid:0\r\na=x-long:{}", "x".repeat(2000)),
                "bytes long",
            ),
            (
                "a=ice-ufrag:",
                &*format!("a=ice-ufrag:{}", "u".repeat(257)),
                "ice-ufrag",
            ),
            ("a=ice-ufrag:", "a=ice-ufrag:abc", "ice-ufrag"),
            ("a=ice-ufrag:", "a=ice-ufrag:ab;cd", "ice-ufrag"),
            ("a=ice-pwd:", "a=ice-pwd:short", "ice-pwd"),
            (
                "a=ice-pwd:",
                &*format!("a=ice-pwd:{}", "p".repeat(257)),
                "ice-pwd",
            ),
            (
                "a=fingerprint:",
                "a=fingerprint:sha-256 zz:00",
                "fingerprint",
            ),
            (
                "a=fingerprint:",
                &*format!("a=fingerprint:sha-256 {}", ["AB"; 65].join(":")),
                "fingerprint",
            ),
            (
                "a=mid:",
                "a=candidate:1 1 udp 2122260223 127.0.0.1 9",
                "candidate",
            ),
            (
                "a=mid:",
                &*format!(
                    "a=candidate:{} 1 udp 1 127.0.0.1 9 typ host",
                    "f".repeat(33)
                ),
                "foundation",
            ),
            (
                "a=mid:",
                "a=candidate:1 999 udp 1 127.0.0.1 9 typ host",
                "component",
            ),
            (
                "a=mid:",
                "a=candidate:1 1 udp 99999999999 127.0.0.1 9 typ host",
                "priority",
            ),
            (
                "a=mid:",
                "a=candidate:1 1 udp 1 127.0.0.1 70000 typ host",
                "port",
            ),
            (
                "a=mid:",
                "a=candidate:1 1 udp 1 127.0.0.1 9 typ other",
                "typ",
            ),
            (
                "a=mid:",
                "a=candidate:1 1 udp 1 127.0.0.1 9 typ host generation",
                "extension",
            ),
        ];
        for (prefix, line, says) in cases {
            let sdp = with_line(prefix, line);
            let err = check_offer(&sdp).expect_err(line);
            let text = err.to_string();
            assert!(matches!(err, OfferError::Malformed(_)), "{text}");
            assert!(text.contains(says), "{line:.60}: {text}");
            assert!(text.len() < 200, "one short line: {text}");
        }
        let many = (0..=MAX_CANDIDATES)
            .map(|i| format!("a=candidate:{i} 1 udp 1 127.0.0.1 {} typ host", 1000 + i))
            .collect::<Vec<_>>()
            .join("\r\n");
        let err = check_offer(&with_line("a=mid:", &format!("a=mid:0\r\n{many}"))).unwrap_err();
        assert!(err.to_string().contains("candidates"), "{err}");
        // The bounds themselves pass.
        let edge = with_line(
            "a=ice-ufrag:",
            &format!("a=ice-ufrag:{}u+/", "u+/9".repeat(27)),
        );
        check_offer(&edge).unwrap();
        check_offer(&with_line("a=ice-ufrag:", "a=ice-ufrag:u+/9")).unwrap();
    }

    #[test]
    fn labels_tracks_in_order() {
        let answer = "v=0\r\nm=video 9 X 96\r\na=mid:0\r\na=msid:abc def\r\na=ssrc:1 msid:abc def\r\nm=video 9 X 96\r\na=msid:ghi jkl\r\nm=application 9 X\r\n";
        let out = finish_answer(answer, &["context", "source"]);
        assert!(out.contains("a=msid:focusd context\r\n"));
        assert!(out.contains("a=ssrc:1 msid:focusd context\r\n"));
        assert!(out.contains("a=msid:focusd source\r\n"));
        assert!(!out.contains("abc"));
    }

    /// The answer str0m gives a Chromium offer: candidates in the first section only.
    #[test]
    fn candidates_in_every_section_and_no_trickle() {
        let mut rtc = str0m::Rtc::new(std::time::Instant::now());
        for addr in ["127.0.0.1:5000", "[::1]:5001"] {
            let c = str0m::Candidate::host(addr.parse().unwrap(), "udp").unwrap();
            rtc.add_local_candidate(c);
        }
        let offer = check_offer(CHROME_OFFER).unwrap().offer;
        let answer = rtc.sdp_api().accept_offer(offer).unwrap().to_sdp_string();
        let out = finish_answer(&answer, &["context", "source"]);
        let sections: Vec<&str> = out.split("\r\nm=").skip(1).collect();
        assert_eq!(sections.len(), 3, "{out}");
        for section in sections {
            let candidates = section
                .lines()
                .filter(|l| l.starts_with("a=candidate:"))
                .count();
            assert_eq!(candidates, 2, "two candidates in {section}");
            assert!(
                section.trim_end().ends_with("a=end-of-candidates"),
                "{section}"
            );
        }
        assert!(!out.contains("a=ice-options:trickle"), "{out}");
        // What str0m writes, it reads back.
        str0m::change::SdpAnswer::from_sdp_string(&out).unwrap();
    }
}
