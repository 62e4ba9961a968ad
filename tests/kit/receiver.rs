//! A headless WebRTC viewer built on str0m: negotiates through a daemon's `/offer`, receives
//! both tracks, optionally decodes them with openh264 and reads the test stamp for latency.
//! `focusd-bench` measures with it; the end-to-end tests check the contract with it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use focusd_board::stamp;
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::http;
use crate::netem::Netem;
use focusd::state::unix_ms;

/// A complete offer from a viewer that never starts ICE (it has no socket): the daemon
/// holds a slot for it until the connect timeout.
pub const ABANDONED_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

/// How a receiver behaves.
#[derive(Clone, Debug)]
pub struct ReceiverOptions {
    /// Decode frames (needed for sizes, stamps, latency and pictures).
    pub decode: bool,
    /// Open a `commands` DataChannel.
    pub commands: bool,
    /// Keep the last decoded luma plane of each track.
    pub keep_frames: bool,
    /// How many video m-lines to offer (1 = context only).
    pub video_lines: usize,
    /// The access token it signs up with.
    pub token: String,
    /// The network between it and the daemon (`None`: loopback as it is).
    pub network: Option<Arc<Netem>>,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        Self {
            decode: true,
            commands: true,
            keep_frames: false,
            video_lines: 2,
            token: http::TEST_TOKEN.to_string(),
            network: None,
        }
    }
}

impl ReceiverOptions {
    /// The defaults, reaching the daemon through `net`.
    pub fn through(net: &Arc<Netem>) -> Self {
        Self {
            network: Some(net.clone()),
            ..Self::default()
        }
    }
}

/// A decoded picture's luma plane.
#[derive(Clone, Debug)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    /// Tightly packed luma.
    pub y: Vec<u8>,
    /// The test stamp read from it, if any.
    pub stamp: Option<u32>,
}

/// What one track received.
#[derive(Clone, Debug, Default)]
pub struct TrackStats {
    /// Frames received, in order or not.
    pub frames: u64,
    /// Of those, frames older than one received before (completed late by a resend of a
    /// lost packet, as str0m's padding does when it probes a link): not news.
    pub stale: u64,
    pub bytes: u64,
    pub decoded: u64,
    pub decode_errors: u64,
    /// Decoded size of the last picture.
    pub size: Option<(u32, u32)>,
    /// From the offer being sent to the first decoded (or, without decoding, received) frame.
    pub first_frame: Option<Duration>,
    /// Stamp-to-decode latencies in ms.
    pub latencies_ms: Vec<u32>,
    pub last: Option<Picture>,
    /// When the last frame was decoded (or, without decoding, received), after the offer.
    pub last_frame_at: Option<Duration>,
    /// Time frozen: of every gap between two frames longer than [`FREEZE`], all of it (ms).
    pub freeze_ms: u64,
}

/// A gap between frames longer than this is a freeze (as WebRTC's stats count them).
pub const FREEZE: Duration = Duration::from_millis(200);

impl TrackStats {
    /// Notes a frame shown at `at` (after the offer), counting a freeze before it.
    fn shown(&mut self, at: Duration) {
        if let Some(last) = self.last_frame_at {
            let gap = at.saturating_sub(last);
            if gap > FREEZE {
                self.freeze_ms += gap.as_millis() as u64;
            }
        }
        self.last_frame_at = Some(at);
    }
}

/// Everything a receiver saw so far.
#[derive(Clone, Debug, Default)]
pub struct ReceiverStats {
    /// Context, source.
    pub tracks: [TrackStats; 2],
    /// Text messages from the `commands` channel, oldest first.
    pub messages: Vec<String>,
    pub commands_open: bool,
    /// ICE+DTLS connected, after the offer was sent.
    pub connected: Option<Duration>,
    /// Set when the session ended or failed.
    pub ended: Option<String>,
}

/// A running receiver on its own thread.
pub struct Receiver {
    stats: Arc<Mutex<ReceiverStats>>,
    to_send: mpsc::Sender<Ask>,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// When the offer was sent (the stats' times count from it).
    started: Instant,
}

impl Receiver {
    /// Negotiates with the daemon at `http` and starts receiving.
    pub fn connect(http: SocketAddr, options: ReceiverOptions) -> anyhow::Result<Receiver> {
        str0m::crypto::from_feature_flags().install_process_default();
        let ip = if http.ip().is_unspecified() {
            "127.0.0.1".parse()?
        } else {
            http.ip()
        };
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).context("bind receiver socket")?;
        let local = socket.local_addr()?;
        let mut config = Rtc::builder().clear_codecs();
        config
            .codec_config()
            .add_h264(102.into(), Some(103.into()), true, 0x42e01f);
        let mut rtc = config.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        let mut api = rtc.sdp_api();
        let mids: Vec<Mid> = (0..options.video_lines)
            .map(|_| api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None))
            .collect();
        if options.commands {
            api.add_channel("commands".into());
        }
        let (offer, pending) = api.apply().context("no changes to offer")?;
        let started = Instant::now();
        let auth = format!("Bearer {}", options.token);
        let response = http::request_with(
            http,
            "POST",
            "/offer",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/sdp"),
            ],
            offered(&offer.to_sdp_string(), options.network.is_some()).as_bytes(),
        )
        .context("POST /offer")?;
        if response.status != 200 {
            bail!(
                "POST /offer answered {}: {}",
                response.status,
                response.text().trim()
            );
        }
        let mut answer = response.text();
        if let Some(net) = &options.network {
            answer = through(net, &answer, ip)?;
        }
        let answer = SdpAnswer::from_sdp_string(&answer).context("parse answer")?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .context("accept answer")?;

        let stats = Arc::new(Mutex::new(ReceiverStats::default()));
        let decode = if options.decode {
            let (tx, rx) = mpsc::channel();
            let decoder = Decoding {
                decoders: [Decoder::new()?, Decoder::new()?],
                stats: stats.clone(),
                keep_frames: options.keep_frames,
                started,
            };
            std::thread::Builder::new()
                .name("focusd-receiver-decode".into())
                .spawn(move || decoder.run(&rx))?;
            Some(tx)
        } else {
            None
        };
        let (to_send, outbox) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            rtc,
            socket,
            local,
            mids,
            started,
            stats: stats.clone(),
            outbox,
            held: Vec::new(),
            decode,
            channel: None,
            newest: [None; 2],
        };
        let (s, p) = (stop.clone(), paused.clone());
        let thread = std::thread::Builder::new()
            .name("focusd-receiver".into())
            .spawn(move || worker.run(&s, &p))?;
        Ok(Receiver {
            stats,
            to_send,
            stop,
            paused,
            thread: Some(thread),
            started,
        })
    }

    /// A copy of what was received so far.
    pub fn stats(&self) -> ReceiverStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Clears counters and latencies (keeps the connection); time frozen counts from now.
    pub fn reset_counters(&self) {
        let now = self.started.elapsed();
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        for t in &mut s.tracks {
            t.last_frame_at = Some(now);
            t.frames = 0;
            t.stale = 0;
            t.bytes = 0;
            t.decoded = 0;
            t.decode_errors = 0;
            t.freeze_ms = 0;
            t.latencies_ms.clear();
        }
    }

    /// Sends a text message on the `commands` channel (once it is open).
    pub fn send(&self, text: &str) {
        let _ = self.to_send.send(Ask::Text(text.to_string()));
    }

    /// Asks the daemon for a keyframe (RTCP PLI) on the `track`th video m-line.
    pub fn request_keyframe(&self, track: usize) {
        let _ = self.to_send.send(Ask::Keyframe(track));
    }

    /// Stops reading the socket (a stalled viewer) or resumes.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// Waits until `check` holds on the stats, or `timeout` passes. Returns the last stats
    /// and whether the check passed.
    pub fn wait_for(
        &self,
        timeout: Duration,
        check: impl Fn(&ReceiverStats) -> bool,
    ) -> (ReceiverStats, bool) {
        let end = Instant::now() + timeout;
        loop {
            let s = self.stats();
            if check(&s) {
                return (s, true);
            }
            if Instant::now() >= end {
                return (s, false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until each track decoded `more` pictures than it had now (pictures resume
    /// after a camera came back), for at most `timeout`; as [`Self::wait_for`].
    pub fn wait_for_more_decoded(&self, more: u64, timeout: Duration) -> (ReceiverStats, bool) {
        let before = self.stats().tracks.each_ref().map(|t| t.decoded);
        self.wait_for(timeout, |s| {
            s.tracks
                .iter()
                .zip(before)
                .all(|(t, before)| t.decoded >= before + more)
        })
    }
}

/// The offer as sent: behind a [`Netem`] without its candidate, so that the daemon can
/// only reach this receiver through the relay (the relay's address, from which the
/// receiver's checks arrive, becomes its peer-reflexive candidate).
fn offered(sdp: &str, behind_relay: bool) -> String {
    if !behind_relay {
        return sdp.to_string();
    }
    sdp.lines()
        .filter(|l| !l.starts_with("a=candidate:"))
        .map(|l| format!("{l}\r\n"))
        .collect()
}

/// The answer with the daemon's candidate on `ip` replaced by `net`'s address (the others
/// dropped), and `net` forwarding to it.
fn through(net: &Netem, answer: &str, ip: std::net::IpAddr) -> anyhow::Result<String> {
    let mut out = String::with_capacity(answer.len());
    let mut found = false;
    for line in answer.lines() {
        if let Some(c) = line.strip_prefix("a=candidate:") {
            let f: Vec<&str> = c.split_ascii_whitespace().collect();
            // <foundation> <component> <proto> <priority> <address> <port> typ ...
            let addr = f
                .get(4)
                .zip(f.get(5))
                .and_then(|(a, p)| format!("{a}:{p}").parse::<SocketAddr>().ok());
            match addr {
                Some(a) if a.ip() == ip && !found => {
                    found = true;
                    net.set_upstream(a);
                    let mut f = f.clone();
                    let (relay_ip, relay_port) =
                        (net.addr().ip().to_string(), net.addr().port().to_string());
                    f[4] = &relay_ip;
                    f[5] = &relay_port;
                    out.push_str(&format!("a=candidate:{}\r\n", f.join(" ")));
                }
                _ => {}
            }
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !found {
        bail!("no candidate on {ip} in the answer");
    }
    Ok(out)
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the test asks the receiver's thread to send.
enum Ask {
    /// A message on the `commands` channel (once it is open).
    Text(String),
    /// A PLI on the nth video m-line.
    Keyframe(usize),
}

struct Worker {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mids: Vec<Mid>,
    started: Instant,
    stats: Arc<Mutex<ReceiverStats>>,
    outbox: mpsc::Receiver<Ask>,
    /// Texts asked for before the `commands` channel opened.
    held: Vec<String>,
    /// Where frames go to be decoded (`None` without decoding): on a thread of its own,
    /// so that this one reads each datagram as it arrives (the arrival times it reports
    /// feed the daemon's bandwidth estimate).
    decode: Option<mpsc::Sender<(usize, Arc<[u8]>)>>,
    channel: Option<str0m::channel::ChannelId>,
    /// Per track, the last RTP sequence number of the newest frame received.
    newest: [Option<u64>; 2],
}

impl Worker {
    fn run(&mut self, stop: &AtomicBool, paused: &AtomicBool) {
        let mut buf = vec![0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if paused.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            while let Ok(ask) = self.outbox.try_recv() {
                match ask {
                    Ask::Text(text) => self.held.push(text),
                    Ask::Keyframe(i) => {
                        if let Some(mut w) = self.mids.get(i).and_then(|m| self.rtc.writer(*m)) {
                            let _ = w.request_keyframe(None, KeyframeRequestKind::Pli);
                        }
                    }
                }
            }
            // Texts wait for the channel to open.
            if let Some(mut ch) = self.channel.and_then(|cid| self.rtc.channel(cid)) {
                for text in self.held.drain(..) {
                    let _ = ch.write(false, text.as_bytes());
                }
            }
            let timeout = match self.drain() {
                Some(t) => t,
                None => break,
            };
            let wait = timeout
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(20));
            let _ = self.socket.set_read_timeout(Some(wait));
            let input = match self.socket.recv_from(&mut buf) {
                Ok((n, source)) => match buf[..n].try_into() {
                    Ok(contents) => Input::Receive(
                        Instant::now(),
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: self.local,
                            contents,
                        },
                    ),
                    Err(_) => continue,
                },
                Err(_) => Input::Timeout(Instant::now()),
            };
            if let Err(e) = self.rtc.handle_input(input) {
                self.end(format!("input failed: {e}"));
                break;
            }
        }
    }

    fn end(&self, why: String) {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).ended = Some(why);
    }

    /// Polls str0m until it wants a timeout; `None` when the session is over.
    fn drain(&mut self) -> Option<Instant> {
        loop {
            if !self.rtc.is_alive() {
                self.end("session closed".into());
                return None;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Some(t),
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.on_event(e),
                Err(e) => {
                    self.end(format!("poll failed: {e}"));
                    return None;
                }
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        let elapsed = self.started.elapsed();
        match event {
            Event::Connected => {
                self.stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .connected = Some(elapsed);
            }
            Event::ChannelOpen(cid, label) if label == "commands" => {
                self.channel = Some(cid);
                self.stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .commands_open = true;
            }
            Event::ChannelData(d) => {
                let text = String::from_utf8_lossy(&d.data).into_owned();
                self.stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .messages
                    .push(text);
            }
            Event::MediaData(data) => {
                let Some(index) = self.mids.iter().position(|m| *m == data.mid) else {
                    return;
                };
                {
                    let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                    let t = &mut s.tracks[index];
                    t.frames += 1;
                    let last = **data.seq_range.end();
                    if self.newest[index].is_some_and(|n| last <= n) {
                        t.stale += 1;
                    } else {
                        self.newest[index] = Some(last);
                    }
                    t.bytes += data.data.len() as u64;
                    if self.decode.is_none() {
                        t.first_frame.get_or_insert(elapsed);
                        t.shown(elapsed);
                    }
                }
                if let Some(decode) = &self.decode {
                    let _ = decode.send((index, data.data));
                }
            }
            _ => {}
        }
    }
}

/// The decoding thread: decodes each frame, reads its stamp and counts it.
struct Decoding {
    decoders: [Decoder; 2],
    stats: Arc<Mutex<ReceiverStats>>,
    keep_frames: bool,
    /// When the offer was sent.
    started: Instant,
}

impl Decoding {
    /// Until the receiver's thread ends.
    fn run(mut self, frames: &mpsc::Receiver<(usize, Arc<[u8]>)>) {
        while let Ok((index, data)) = frames.recv() {
            let mut picture = None;
            let mut failed = false;
            match self.decoders[index].decode(&data) {
                Ok(Some(yuv)) => {
                    let (w, h) = yuv.dimensions();
                    let stride = yuv.strides().0;
                    let y = yuv.y();
                    let stamp = stamp::read(y, w as u32, h as u32, stride);
                    let packed = if self.keep_frames {
                        y.chunks(stride)
                            .take(h)
                            .flat_map(|row| &row[..w])
                            .copied()
                            .collect()
                    } else {
                        Vec::new()
                    };
                    picture = Some(Picture {
                        width: w as u32,
                        height: h as u32,
                        y: packed,
                        stamp,
                    });
                }
                Ok(None) => {}
                Err(_) => failed = true,
            }
            let elapsed = self.started.elapsed();
            let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            let t = &mut s.tracks[index];
            t.decode_errors += u64::from(failed);
            if let Some(p) = picture {
                t.shown(elapsed);
                t.decoded += 1;
                t.first_frame.get_or_insert(elapsed);
                t.size = Some((p.width, p.height));
                if let Some(st) = p.stamp {
                    t.latencies_ms.push(stamp::age_ms(st, unix_ms()));
                }
                if self.keep_frames {
                    t.last = Some(p);
                }
            }
        }
    }
}
