//! A str0m viewer in this process negotiates through the real HTTP endpoint and checks
//! what it decodes.

use std::time::Duration;

use focusd::receiver::{Receiver, ReceiverOptions};
use focusd_e2e::TestDaemon;

#[test]
fn both_tracks_decode_at_configured_sizes() {
    let d = TestDaemon::start(&["--source", "test", "--size", "640x360", "--fps", "30"]);
    let r = Receiver::connect(d.addr, ReceiverOptions::default()).unwrap();
    let (s, ok) = r.wait_for(Duration::from_secs(10), |s| {
        s.tracks.iter().all(|t| t.decoded >= 10)
    });
    assert!(
        ok,
        "both tracks decode: {:?}",
        s.tracks
            .iter()
            .map(|t| (t.frames, t.decoded, t.decode_errors))
            .collect::<Vec<_>>()
    );
    assert_eq!(s.tracks[0].size, Some((320, 180)));
    assert_eq!(s.tracks[1].size, Some((640, 360)));
    println!(
        "connected {:?} first frames {:?} {:?}",
        s.connected, s.tracks[0].first_frame, s.tracks[1].first_frame
    );
    println!("latency ctx {:?}", &s.tracks[0].latencies_ms[..5]);
}

#[test]
fn timing_probe() {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_default())
        .init();
    let d = TestDaemon::start(&["--source", "test", "--size", "640x360", "--fps", "30"]);
    let t = std::time::Instant::now();
    let r = Receiver::connect(d.addr, ReceiverOptions::default()).unwrap();
    println!("offer/answer took {:?}", t.elapsed());
    let (s, _) = r.wait_for(Duration::from_secs(10), |s| s.connected.is_some());
    println!("connected {:?}", s.connected);
}
