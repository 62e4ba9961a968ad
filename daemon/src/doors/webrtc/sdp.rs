//! SDP checks and edits around str0m: what the offer must contain, what the browser's
//! mDNS candidates need, and the track ids the answer announces.

use str0m::change::SdpOffer;

use super::OfferError;

/// Largest SDP offer accepted, in bytes (browsers send 3–8 KiB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

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
