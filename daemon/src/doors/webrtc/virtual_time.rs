//! The hub against a real str0m viewer in virtual time, as str0m tests itself: the
//! datagrams between them are handed over in memory and the clock jumps to the next thing
//! either side waits for, so ICE, DTLS, SCTP, media and a viewer's silence run through in
//! milliseconds, with no socket and no sleep.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use super::negotiate::test_negotiator;
use super::{Hub, HubEvent, HubSettings};
use crate::service::metrics::Metrics;
use crate::state::command::Access;
use crate::track::{EncodedFrame, Track, TrackMap};
use crate::video::signals::Demand;

/// The viewer's host candidate (the hub's is `test_negotiator`'s).
const VIEWER_ADDR: &str = "127.0.0.1:6000";
const FRAME_INTERVAL: Duration = Duration::from_millis(33);
/// The least the clock moves at a step.
const TICK: Duration = Duration::from_millis(1);

/// The hub, one str0m viewer and the virtual clock between them.
struct Session {
    hub: Hub,
    viewer: Rtc,
    /// The viewer's two video m-lines, in offer order (context, source).
    mids: [Mid; 2],
    now: Instant,
    next_frame: Instant,
    frames_sent: u64,
    /// Tracks whose next frame is a keyframe: the hub asked, as an encoder is asked.
    keyframe_wanted: TrackMap<bool>,
    /// Whether datagrams still pass (false: the viewer has vanished).
    linked: bool,
    hub_events: Vec<HubEvent>,
    /// Media the viewer received, per m-line.
    received: [usize; 2],
    connected: bool,
    commands_open: bool,
    /// When the hub reported the session's end.
    ended_at: Option<Instant>,
}

impl Session {
    fn start(demand: Demand) -> Session {
        str0m::crypto::from_feature_flags().install_process_default();
        let start = Instant::now();
        let mut config = Rtc::builder().clear_codecs();
        config
            .codec_config()
            .add_h264(102.into(), Some(103.into()), true, 0x42e01f);
        let mut viewer = config.build(start);
        let local: SocketAddr = VIEWER_ADDR.parse().expect("an address");
        viewer.add_local_candidate(Candidate::host(local, "udp").expect("a host candidate"));
        let mut api = viewer.sdp_api();
        let mids =
            [0, 1].map(|_| api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None));
        api.add_channel("commands".into());
        let (offer, pending) = api.apply().expect("an offer");
        let negotiator = test_negotiator(true);
        let admission = negotiator
            .answer(start, &offer.to_sdp_string(), Access::Full)
            .expect("the offer is answered");
        let settings = HubSettings::for_tests(4);
        let mut hub = Hub::new(settings, Arc::new(Metrics::default()), demand, start);
        let (_, answer) = hub.admit(start, admission).expect("admitted");
        let answer = SdpAnswer::from_sdp_string(&answer).expect("the answer parses");
        viewer
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the viewer takes the answer");
        Session {
            hub,
            viewer,
            mids,
            now: start,
            next_frame: start,
            frames_sent: 0,
            keyframe_wanted: TrackMap::default(),
            linked: true,
            hub_events: Vec::new(),
            received: [0, 0],
            connected: false,
            commands_open: false,
            ended_at: None,
        }
    }

    /// Hands over what each side has to send until both wait, then moves the clock to
    /// the first thing due (a timeout of either side, or the next frame) and feeds it.
    fn step(&mut self) {
        let viewer_wakes = loop {
            while let Some(t) = self.hub.poll_transmit() {
                if self.linked {
                    let input = receive(self.now, t.source, t.destination, &t.contents);
                    self.viewer
                        .handle_input(input)
                        .expect("the viewer takes the datagram");
                }
            }
            while let Some(event) = self.hub.poll_event() {
                match event {
                    HubEvent::Ended(_) => {
                        self.ended_at.get_or_insert(self.now);
                    }
                    HubEvent::KeyframeWanted(t) | HubEvent::KeyframeRepair(t) => {
                        self.keyframe_wanted[t] = true;
                    }
                    _ => {}
                }
                self.hub_events.push(event);
            }
            match self.viewer.poll_output().expect("the viewer runs") {
                Output::Timeout(at) => break at,
                Output::Transmit(t) if self.linked => {
                    self.hub
                        .handle_datagram(self.now, t.source, t.destination, &t.contents);
                }
                Output::Transmit(_) => {}
                Output::Event(event) => self.on_viewer_event(event),
            }
        };
        // A side that asks for the present again (str0m's pacer does, with packets queued)
        // gets the clock moved on by a tick, as a real driver's clock would have moved.
        let next = self
            .hub
            .poll_timeout(self.now)
            .min(viewer_wakes)
            .min(self.next_frame)
            .max(self.now + TICK);
        self.now = next;
        self.hub.handle_timeout(next);
        self.viewer
            .handle_input(Input::Timeout(next))
            .expect("the viewer takes the time");
        if next >= self.next_frame {
            self.send_frames();
            self.next_frame += FRAME_INTERVAL;
        }
    }

    /// One access unit per track: an IDR each second and when the hub asks for one,
    /// P-frames between.
    fn send_frames(&mut self) {
        for track in Track::ALL {
            let keyframe = self.frames_sent.is_multiple_of(30)
                || std::mem::take(&mut self.keyframe_wanted[track]);
            let nal_type = if keyframe { 0x65 } else { 0x41 };
            let mut data = vec![0, 0, 0, 1, nal_type];
            data.extend(std::iter::repeat_n(0x5a, 200));
            let frame = EncodedFrame {
                track,
                data: data.into(),
                keyframe,
                captured_at: self.now,
                temporal_layer: 0,
            };
            self.hub.handle_frame(self.now, &frame);
        }
        self.frames_sent += 1;
    }

    fn on_viewer_event(&mut self, event: Event) {
        match event {
            Event::Connected => self.connected = true,
            Event::ChannelOpen(_, label) if label == "commands" => self.commands_open = true,
            Event::MediaData(data) => {
                if let Some(i) = self.mids.iter().position(|m| *m == data.mid) {
                    self.received[i] += 1;
                }
            }
            _ => {}
        }
    }

    /// Steps until `done` holds or `within` of virtual time has passed; whether it held.
    fn run_until(&mut self, within: Duration, mut done: impl FnMut(&Session) -> bool) -> bool {
        let end = self.now + within;
        // Bounded in steps too: a clock that stops moving must fail the test, not hang it.
        for _ in 0..200_000 {
            if done(self) {
                return true;
            }
            if self.now >= end {
                return false;
            }
            self.step();
        }
        false
    }
}

impl Session {
    /// Steps through `d` of virtual time.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }
}

fn receive(now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) -> Input<'_> {
    Input::Receive(
        now,
        Receive {
            proto: Protocol::Udp,
            source,
            destination,
            contents: data.try_into().expect("a datagram str0m reads"),
        },
    )
}

#[test]
fn a_str0m_viewer_connects_gets_both_tracks_and_is_dropped_once_it_goes_silent() {
    let demand = Demand::new();
    let mut s = Session::start(demand.clone());
    let started = s.now;
    assert_eq!(s.hub.viewers(), 1);
    assert_eq!(
        (
            demand.consumers(Track::Context),
            demand.consumers(Track::Source)
        ),
        (1, 1),
        "both tracks claimed from the offer on"
    );
    assert!(
        s.run_until(Duration::from_secs(5), |s| s.connected && s.commands_open),
        "ICE, DTLS and SCTP done in 5 s of virtual time (connected {}, commands {})",
        s.connected,
        s.commands_open
    );
    let connected_after = s.now - started;
    assert!(
        s.hub_events
            .iter()
            .any(|e| matches!(e, HubEvent::CommandsOpen(_))),
        "the hub saw the commands channel open: {:?}",
        s.hub_events
    );
    for track in Track::ALL {
        assert!(
            s.hub_events
                .iter()
                .any(|e| matches!(e, HubEvent::KeyframeWanted(t) if *t == track)),
            "a keyframe asked for {track:?}"
        );
    }
    // Three seconds of 30 fps: both m-lines get frames (from the first IDR on).
    let received = s.received;
    s.run_for(Duration::from_secs(3));
    let got = [s.received[0] - received[0], s.received[1] - received[1]];
    assert!(
        got.iter().all(|&n| n >= 85),
        "media on both tracks in 3 s at 30 fps: {got:?}"
    );

    // The viewer vanishes (no datagram either way): its checks go unanswered, the hub ends
    // the session, reports it and gives both claims back.
    s.linked = false;
    let silent_at = s.now;
    assert!(
        s.run_until(Duration::from_secs(60), |s| s.ended_at.is_some()),
        "a silent viewer's end reported within 60 s of virtual time"
    );
    assert_eq!(s.hub.viewers(), 0);
    let ended = s.ended_at.expect("the end reported") - silent_at;
    println!(
        "connected after {connected_after:?}; {got:?} frames in 3 s; dropped {ended:?} after going silent"
    );
    assert!(
        ended >= Duration::from_secs(3) && ended <= Duration::from_secs(30),
        "dropped {ended:?} after it went silent (connected in {connected_after:?})"
    );
    assert_eq!(
        (
            demand.consumers(Track::Context),
            demand.consumers(Track::Source)
        ),
        (0, 0),
        "the claims given back"
    );
    assert!(
        s.hub_events
            .iter()
            .any(|e| matches!(e, HubEvent::Viewers(0))),
        "the viewer count went to 0: {:?}",
        s.hub_events.last()
    );
}
