//! Generated and mutated SDP offers through the whole answer path and a STUN exchange:
//! the [`Negotiator`] answers, the [`Hub`] admits, a peer's STUN binding request arrives,
//! and the hub runs in virtual time while its ICE agent answers and checks. Nothing may
//! panic; a refused offer is refused with one short line (answered 400 by HTTP).
//!
//! Seeds: offers of real Chromium, aiortc and GStreamer (`tests/data/*-offer.sdp`) and the
//! case an HTTP fuzz found (a 40,017-character `a=ice-ufrag`, which made str0m's ICE agent
//! panic inside the WebRTC server's task). Mutations replace an attribute's value (ICE
//! first: ufrag, pwd, candidates, fingerprints), drop, repeat or swap lines, cut the text
//! or change a byte. `FOCUSD_FUZZ_CASES` sets how many cases a run tries (default 2000,
//! about a second here), `FOCUSD_FUZZ_SEED` which ones (a number, or `random`; fixed by
//! default so that CI is not red by chance); each failure is shrunk and printed.
//!
//! Found so far: a ufrag of 112–256 characters panics str0m's ICE agent (now refused
//! by [`super::sdp`]); an offer with a byte changed in a GStreamer offer's payload types
//! trips an assertion in str0m's SDP handling (now refused by the negotiator's guard).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use str0m::ice::{StunMessage, TransId};

use super::negotiate::test_negotiator;
use super::{Hub, HubSettings, Negotiator, OfferError};
use crate::service::metrics::Metrics;
use crate::state::command::Access;
use crate::video::signals::Demand;

/// Real offers, and what made them.
const SEEDS: [(&str, &str); 4] = [
    (
        "chromium",
        include_str!("../../../../tests/data/chromium-offer.sdp"),
    ),
    (
        "chrome",
        include_str!("../../../../tests/data/chrome-offer.sdp"),
    ),
    (
        "aiortc",
        include_str!("../../../../tests/data/aiortc-offer.sdp"),
    ),
    (
        "gstreamer",
        include_str!("../../../../tests/data/gstreamer-offer.sdp"),
    ),
];

/// The daemon's address in these tests (the test negotiator's one candidate), and the
/// peer's.
const DAEMON: &str = "127.0.0.1:5000";
const PEER: &str = "127.0.0.1:40000";

/// The HTTP fuzz's case: Chromium's offer with a 40,017-character ufrag.
fn long_ufrag_offer() -> String {
    let long = "a".repeat(40_017);
    let mut done = false;
    SEEDS[1]
        .1
        .lines()
        .map(|l| {
            if !done && l.starts_with("a=ice-ufrag:") {
                done = true;
                format!("a=ice-ufrag:{long}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// The value of the first `a=NAME:` line in `sdp`.
fn attribute<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(prefix.as_str()))
        .map(str::trim)
}

/// What became of one offer.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Refused with this reason.
    Refused(String),
    /// Answered and admitted; whether the hub answered the peer's binding request.
    Admitted { stun_answered: bool },
}

/// Runs `offer` through the answer path, the hub and a STUN exchange in virtual time.
fn exercise(negotiator: &Negotiator, offer: &str) -> Outcome {
    let start = Instant::now();
    let admission = match negotiator.answer(start, offer, Access::Full) {
        Ok(a) => a,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let settings = HubSettings::for_tests(4);
    let mut hub = Hub::new(settings, Arc::new(Metrics::default()), Demand::new(), start);
    let answer = match hub.admit(start, admission) {
        Ok((_, answer)) => answer,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let (daemon, peer): (SocketAddr, SocketAddr) = (
        DAEMON.parse().expect("an address"),
        PEER.parse().expect("an address"),
    );
    // The peer's check, as its ICE agent would send it: USERNAME is the daemon's ufrag
    // and its own, MESSAGE-INTEGRITY keyed with the daemon's password.
    let request = match (
        attribute(&answer, "ice-ufrag"),
        attribute(&answer, "ice-pwd"),
        attribute(offer, "ice-ufrag"),
    ) {
        (Some(local_ufrag), Some(local_pwd), Some(remote_ufrag)) => {
            let username = format!("{local_ufrag}:{remote_ufrag}");
            let message = StunMessage::binding_request(
                &username,
                TransId::new(),
                true,
                7,
                1_853_824_767,
                true,
            );
            let hmac = str0m::crypto::from_feature_flags().sha1_hmac_provider;
            let mut buf = vec![0u8; 2048];
            message
                .to_bytes(Some(local_pwd.as_bytes()), &mut buf, |key, payloads| {
                    hmac.sha1_hmac(key, payloads)
                })
                .ok()
                .map(|n| {
                    buf.truncate(n);
                    buf
                })
        }
        _ => None,
    };
    let mut now = start;
    let mut stun_answered = false;
    let mut sent_at = None;
    // Bounded in steps as well as in virtual time.
    for _ in 0..2_000 {
        if now > start + Duration::from_secs(3) {
            break;
        }
        // The check goes out at once and is repeated every 500 ms, as a peer retries.
        if let Some(request) = &request
            && sent_at.is_none_or(|t| now >= t + Duration::from_millis(500))
        {
            hub.handle_datagram(now, peer, daemon, request);
            sent_at = Some(now);
        }
        while let Some(t) = hub.poll_transmit() {
            // A binding success response (type 0x0101) to the peer.
            stun_answered |= t.destination == peer && t.contents.starts_with(&[0x01, 0x01]);
        }
        while hub.poll_event().is_some() {}
        let wake = hub.poll_timeout(now).max(now + Duration::from_millis(1));
        now = wake.min(start + Duration::from_secs(4));
        hub.handle_timeout(now);
    }
    Outcome::Admitted { stun_answered }
}

/// One edit of an offer's text.
#[derive(Clone, Debug)]
enum Mutation {
    /// The value of the n-th line that carries `a=<one of ICE_ATTRIBUTES>:` is replaced.
    IceValue(usize, usize, String),
    /// The part after the first `:` or `=` of the n-th line is replaced.
    Value(usize, String),
    /// The n-th line goes.
    Drop(usize),
    /// The n-th line is there `k` times.
    Repeat(usize, usize),
    /// Two lines change places.
    Swap(usize, usize),
    /// The text is cut at a fraction of its length.
    Cut(f64),
    /// The byte at a fraction of the length becomes another.
    Byte(f64, u8),
}

const ICE_ATTRIBUTES: [&str; 6] = [
    "ice-ufrag",
    "ice-pwd",
    "candidate",
    "fingerprint",
    "setup",
    "ice-options",
];

/// Values to put in: ICE-like characters of any length up to far beyond the bounds,
/// printable junk, numbers, and nothing.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9+/]{0,300}",
        "[ -~]{0,80}",
        (0usize..50_000).prop_map(|n| "u".repeat(n)),
        "[0-9]{1,24}",
        "[0-9a-f]{1,8} [0-9]{1,4} (udp|tcp|UDP) [0-9]{1,12} [0-9.:a-z]{1,40} [0-9]{1,6} typ (host|srflx|relay|x)( [a-z]{1,8} [0-9a-z]{1,8}){0,3}",
        Just(String::new()),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0..ICE_ATTRIBUTES.len(), value())
            .prop_map(|(n, a, v)| Mutation::IceValue(n, a, v)),
        2 => (any::<usize>(), value()).prop_map(|(n, v)| Mutation::Value(n, v)),
        1 => any::<usize>().prop_map(Mutation::Drop),
        1 => (any::<usize>(), 2usize..200).prop_map(|(n, k)| Mutation::Repeat(n, k)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        1 => (0.0..1.0f64).prop_map(Mutation::Cut),
        1 => (0.0..1.0f64, any::<u8>()).prop_map(|(f, b)| Mutation::Byte(f, b)),
    ]
}

fn apply(sdp: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = sdp
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    if lines.is_empty() {
        return sdp.to_string();
    }
    let at = |n: usize, len: usize| n % len.max(1);
    match m {
        Mutation::IceValue(n, a, v) => {
            let prefix = format!("a={}:", ICE_ATTRIBUTES[*a]);
            let found: Vec<usize> = (0..lines.len())
                .filter(|i| lines[*i].starts_with(&prefix))
                .collect();
            if !found.is_empty() {
                let i = found[at(*n, found.len())];
                lines[i] = format!("{prefix}{v}");
            } else {
                let i = at(*n, lines.len());
                lines.insert(i, format!("{prefix}{v}"));
            }
        }
        Mutation::Value(n, v) => {
            let i = at(*n, lines.len());
            let cut = lines[i].find([':', '=']).map_or(0, |p| p + 1);
            lines[i] = format!("{}{v}", &lines[i][..cut]);
        }
        Mutation::Drop(n) => {
            lines.remove(at(*n, lines.len()));
        }
        Mutation::Repeat(n, k) => {
            let i = at(*n, lines.len());
            let line = lines[i].clone();
            for _ in 1..*k {
                lines.insert(i, line.clone());
            }
        }
        Mutation::Swap(a, b) => {
            let len = lines.len();
            lines.swap(at(*a, len), at(*b, len));
        }
        Mutation::Cut(f) => {
            let text = lines.join("\r\n");
            let mut cut = (text.len() as f64 * f) as usize;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            return text[..cut].to_string();
        }
        Mutation::Byte(f, b) => {
            let mut bytes = lines.join("\r\n").into_bytes();
            let i = ((bytes.len() as f64 * f) as usize).min(bytes.len().saturating_sub(1));
            if let Some(x) = bytes.get_mut(i) {
                *x = *b;
            }
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    lines.join("\r\n") + "\r\n"
}

/// Every seed as it is: answered, admitted, and the peer's check answered.
#[test]
fn real_offers_are_answered_and_their_checks_answered() {
    let negotiator = test_negotiator(true);
    for (name, offer) in SEEDS {
        let outcome = exercise(&negotiator, offer);
        assert_eq!(
            outcome,
            Outcome::Admitted {
                stun_answered: true
            },
            "{name}"
        );
    }
}

/// The HTTP fuzz's find is refused before str0m sees it, naming the attribute.
#[test]
fn the_long_ufrag_is_refused_with_its_reason() {
    let negotiator = test_negotiator(true);
    match exercise(&negotiator, &long_ufrag_offer()) {
        Outcome::Refused(why) => {
            assert!(
                why.contains("a=ice-ufrag is 40017 characters long"),
                "{why}"
            );
            let e = OfferError::Malformed(String::new());
            assert!(
                why.starts_with(&e.to_string()),
                "a malformed-SDP refusal (400): {why}"
            );
        }
        other => panic!("accepted: {other:?}"),
    }
}

/// Mutated real offers: no panic anywhere on the path; a refusal is one short line.
#[test]
fn mutated_offers_never_panic_and_are_refused_in_one_line() {
    let cases = std::env::var("FOCUSD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let negotiator = test_negotiator(true);
    // The same cases every run unless asked (CI must not go red by chance); a developer
    // explores with FOCUSD_FUZZ_SEED=random, or any number.
    let seed: u64 = match std::env::var("FOCUSD_FUZZ_SEED").as_deref() {
        Ok("random") => getrandom::u64().expect("randomness"),
        Ok(n) => n.parse().expect("FOCUSD_FUZZ_SEED is a number or `random`"),
        Err(_) => 0x_f0c5_d0ff,
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    println!("FOCUSD_FUZZ_SEED={seed}");
    let strategy = (0..SEEDS.len() + 1, prop::collection::vec(mutation(), 1..5));
    let long = long_ufrag_offer();
    let (admitted, refused) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    runner
        .run(&strategy, |(seed, mutations)| {
            let mut offer = match seed {
                i if i < SEEDS.len() => SEEDS[i].1.to_string(),
                _ => long.clone(),
            };
            for m in &mutations {
                offer = apply(&offer, m);
            }
            match exercise(&negotiator, &offer) {
                Outcome::Refused(why) => {
                    refused.set(refused.get() + 1);
                    prop_assert!(!why.contains('\n'), "{why:?}");
                    prop_assert!(why.len() <= 300, "a short reason: {why:.300}");
                }
                Outcome::Admitted { .. } => admitted.set(admitted.get() + 1),
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // Both sides were reached: the mutations are neither all harmless nor all fatal.
    let (admitted, refused) = (admitted.get(), refused.get());
    assert!(
        admitted > 0 && refused > 0,
        "{admitted} admitted, {refused} refused"
    );
    println!("{cases} mutated offers: {admitted} admitted, {refused} refused");
}
