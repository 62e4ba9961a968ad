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
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::http;
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
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        Self {
            decode: true,
            commands: true,
            keep_frames: false,
            video_lines: 2,
            token: http::TEST_TOKEN.to_string(),
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
    pub frames: u64,
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
    to_send: mpsc::Sender<String>,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
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
            .add_h264(102.into(), None, true, 0x42e01f);
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
            offer.to_sdp_string().as_bytes(),
        )
        .context("POST /offer")?;
        if response.status != 200 {
            bail!(
                "POST /offer answered {}: {}",
                response.status,
                response.text().trim()
            );
        }
        let answer = SdpAnswer::from_sdp_string(&response.text()).context("parse answer")?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .context("accept answer")?;

        let stats = Arc::new(Mutex::new(ReceiverStats::default()));
        let (to_send, outbox) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            rtc,
            socket,
            local,
            mids,
            options,
            started,
            stats: stats.clone(),
            outbox,
            decoders: [Decoder::new()?, Decoder::new()?],
            channel: None,
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
        })
    }

    /// A copy of what was received so far.
    pub fn stats(&self) -> ReceiverStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Clears counters and latencies (keeps the connection).
    pub fn reset_counters(&self) {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        for t in &mut s.tracks {
            t.frames = 0;
            t.bytes = 0;
            t.decoded = 0;
            t.latencies_ms.clear();
        }
    }

    /// Sends a text message on the `commands` channel (once it is open).
    pub fn send(&self, text: &str) {
        let _ = self.to_send.send(text.to_string());
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
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mids: Vec<Mid>,
    options: ReceiverOptions,
    started: Instant,
    stats: Arc<Mutex<ReceiverStats>>,
    outbox: mpsc::Receiver<String>,
    decoders: [Decoder; 2],
    channel: Option<str0m::channel::ChannelId>,
}

impl Worker {
    fn run(&mut self, stop: &AtomicBool, paused: &AtomicBool) {
        let mut buf = vec![0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if paused.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            if let Some(cid) = self.channel {
                while let Ok(text) = self.outbox.try_recv() {
                    if let Some(mut ch) = self.rtc.channel(cid) {
                        let _ = ch.write(false, text.as_bytes());
                    }
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
                let mut picture = None;
                let mut failed = false;
                if self.options.decode {
                    match self.decoders[index].decode(&data.data) {
                        Ok(Some(yuv)) => {
                            let (w, h) = yuv.dimensions();
                            let stride = yuv.strides().0;
                            let y = yuv.y();
                            let stamp = stamp::read(y, w as u32, h as u32, stride);
                            let packed = if self.options.keep_frames {
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
                }
                let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                let t = &mut s.tracks[index];
                t.frames += 1;
                t.bytes += data.data.len() as u64;
                t.decode_errors += u64::from(failed);
                if !self.options.decode && t.first_frame.is_none() {
                    t.first_frame = Some(elapsed);
                }
                if let Some(p) = picture {
                    t.decoded += 1;
                    t.first_frame.get_or_insert(elapsed);
                    t.size = Some((p.width, p.height));
                    if let Some(st) = p.stamp {
                        t.latencies_ms.push(stamp::age_ms(st, unix_ms()));
                    }
                    if self.options.keep_frames {
                        t.last = Some(p);
                    }
                }
            }
            _ => {}
        }
    }
}
