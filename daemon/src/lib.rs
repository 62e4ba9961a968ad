//! # focusd
//!
//! An edge camera daemon. It captures a camera, finds the region of interest (ROI) on the
//! device, encodes H.264 once per track and serves two WebRTC tracks to any number of
//! viewers: a cheap low-res **context** track of the full frame, and a high-res **source**
//! track shaped by a [`state::command::Mode`] (LOW: nothing; HIGH: full frame; VISION:
//! only the ROI, black elsewhere; HYBRID: the ROI limited to a user rectangle). A
//! `commands` DataChannel, `POST /api/command` and MQTT change the mode.
//!
//! ## Shape
//! ```text
//! source ─► capture ─► [slot] ─► context encoder ─────────┐
//!              │    ─► [slot] ─► mask ─► source encoder ───┼─► hub queue ─► [relay] ─► hub ─► viewers
//!              │                                           └─► taps ─► RTSP
//!              ├──► picture feed ─► snapshot · MJPEG · WebSockets
//!              └──► [slot] ─► ROI detector ─► Control ◄── HTTP · DataChannel · MQTT
//! ```
//! Where each stage lives:
//! * capture, shaping by mode and encoding: [`video`] (its threads never wait for a
//!   viewer);
//! * from one encoding to every consumer: [`fanout`] (the hub queue, the taps, the picture
//!   feed), then each viewer's own pacing in [`doors::webrtc`]'s hub;
//! * perception, the detectors and the tracker that find the region of interest:
//!   [`roi`], on its own thread;
//! * state: [`state::Control`], the one owner of mode, rectangle, ROI and counters, and
//!   [`state::command`] and [`state::protocol`], the one command schema and the wire
//!   messages every door shares;
//! * the ways in and out: [`doors`]: HTTP ([`doors::http`]: the routes, who may call them,
//!   the server that holds each connection to its limits), the viewers
//!   ([`doors::webrtc`]: a sans-IO hub and the server that drives it), the fleet broker
//!   ([`doors::mqtt`]), RTSP, the picture doors, and a relay or an SFU that fan the tracks
//!   out past one board ([`doors::relay`], [`doors::whip`]);
//! * the service: [`service`]: the pulse, readiness and the watchdog for systemd, metrics,
//!   the task supervisor, `/proc` readings;
//! * configuration: [`config`]: flags and the TOML file, resolved into
//!   [`config::Settings`];
//! * the commands beside the daemon: [`cli`] (`probe`, `token`, and `ctl`, the fleet
//!   console on the broker's other side).
//!
//! New rooms go where their layer is: an alert rule engine (sans-IO, fed ROI tracks and
//! time) is a module of its own between [`roi`] and [`doors`], its webhooks and MQTT
//! events in [`doors`]; the web console's API routes in [`doors::http`], its app outside
//! the crates (it is built with Node; the daemon never needs it).
//!
//! ## Layers
//! Each module uses only the modules on the lines below its own (`tests/house.rs` keeps
//! it so, and that no folder's modules import each other in a circle), top first:
//! ```text
//! cli             the commands beside the daemon
//! doors           every way in and out
//! roi             perception: detectors and tracker
//! video           capture, masks, encoders
//! fanout          one encoding to every consumer
//! service         pulse, watchdog, metrics, supervisor
//! config          flags and file, resolved
//! state           Control, the command schema, the wire messages
//! backoff, track  vocabulary: retry pacing, the two tracks
//! ```
//! The crate root ([`Daemon`]) wires them all and sits on top.
//!
//! Start it with [`Daemon::start`], stop it by cancelling the token you passed in.

pub mod backoff;
pub mod cli;
pub mod config;
pub mod doors;
pub mod fanout;
pub mod roi;
pub mod service;
pub mod state;
pub mod track;
pub mod video;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{MqttSettings, Settings};
use crate::doors::http;
use crate::doors::http::auth::{Gate, TokenError};
use crate::doors::http::server::{HttpProbe, Server, TlsError};
use crate::doors::mqtt::client::{MqttError, MqttTask};
use crate::doors::pictures::Pictures;
use crate::doors::relay::{RelayError, RelayTask};
use crate::doors::rtsp::{RtspDoor, RtspError};
use crate::doors::webrtc::delivery::Bounds;
use crate::doors::webrtc::reflexive;
use crate::doors::webrtc::server::{HubTask, WebRtcHandle, bind_sockets};
use crate::doors::whip::WhipTask;
use crate::fanout::{HubReceiver, HubSender};
use crate::service::liveness::Liveness;
use crate::service::metrics::Metrics;
use crate::service::supervisor::{Supervised, Supervisor};
use crate::state::command::Mode;
use crate::state::protocol::{Info, TrackInfo, WebRtcConfig};
use crate::state::{Bitrates, Control, Part};
use crate::track::{Track, TrackMap};
use crate::video::capture::CaptureSpec;
use crate::video::pipeline::{Pipeline, PipelineError, join_within};
use crate::video::slot::LatestSlot;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configured source or encoder cannot be used: a configuration problem.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The HTTP address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// No UDP socket for media could be bound.
    #[error("cannot bind media sockets: {0}")]
    Media(std::io::Error),
    /// The MQTT client cannot be set up (bad TLS files): a configuration problem.
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    /// The access token cannot be read or kept (the state directory is not writable).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The HTTPS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// The configured RTSP port cannot be listened on.
    #[error(transparent)]
    Rtsp(#[from] RtspError),
}

impl StartError {
    /// Whether this comes from configuration (exit status 2: restarting will not help).
    pub fn is_config(&self) -> bool {
        match self {
            StartError::Pipeline(PipelineError::Source(_))
            | StartError::Mqtt(_)
            | StartError::Token(_)
            | StartError::Tls(_) => true,
            StartError::Pipeline(PipelineError::Encoder(e)) => e.is_config(),
            _ => false,
        }
    }
}

/// How long shutdown waits for the capture, encoder and ROI threads.
pub const THREAD_GRACE: Duration = Duration::from_millis(700);

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    http_addr: SocketAddr,
    /// Where RTSP listens, when it does.
    rtsp_addr: Option<SocketAddr>,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    /// The HTTP access rules (the token in use).
    gate: Arc<Gate>,
    /// The routes, for the watchdog's probe.
    router: axum::Router,
    pipeline: Pipeline,
    /// The ROI detector's thread, joined on shutdown with the pipeline's.
    roi: std::thread::JoinHandle<()>,
}

impl Daemon {
    /// Opens the source, binds the sockets and starts serving. Returns once the daemon is
    /// listening; it runs until `shutdown` is cancelled.
    ///
    /// In order: access (a bad token file or certificate is a configuration error found
    /// before any device is opened), the video pipeline and the ROI detector, the viewers'
    /// path (relay, WebRTC hub, WHIP), HTTP, RTSP, the rates and MQTT. Every task runs
    /// under one supervisor and one tracker.
    pub async fn start(
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Result<Daemon, StartError> {
        let metrics = Arc::new(Metrics::default());
        let (gate, tls) = access(&settings, &metrics)?;
        let control = Arc::new(Control::new(
            settings.mode,
            settings.hybrid_rect,
            String::new(),
            String::new(),
        ));
        let (frames, frames_rx) = fanout::hub_queue();
        let (pipeline, roi) = video(&settings, &control, &metrics, frames, &shutdown)?;
        let tracker = TaskTracker::new();
        let wiring = Wiring {
            settings: &settings,
            supervisor: Supervisor::new(control.clone(), metrics.clone()),
            control,
            metrics,
            pipeline: &pipeline,
            tracker: &tracker,
            shutdown: &shutdown,
        };
        let webrtc = wiring.viewers(frames_rx).await?;
        let (listener, http_addr) = listen(settings.listen).await?;
        let router = wiring.http(listener, tls, webrtc, gate.clone());
        let rtsp_addr = wiring.rtsp(http_addr, &gate)?;
        let rates = Rates {
            control: wiring.control.clone(),
            metrics: wiring.metrics.clone(),
        };
        wiring.supervisor.spawn(&tracker, rates, shutdown.clone());
        wiring.mqtt(http_addr)?;
        let Wiring {
            control, metrics, ..
        } = wiring;
        tracker.close();
        tracing::info!(%http_addr, source = %pipeline.source, tls = settings.http.tls.is_some(), "focusd serving");
        Ok(Daemon {
            http_addr,
            rtsp_addr,
            control,
            metrics,
            tracker,
            gate,
            router,
            pipeline,
            roi,
        })
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where RTSP listens (`None`: off, or not in this build).
    pub fn rtsp_addr(&self) -> Option<SocketAddr> {
        self.rtsp_addr
    }

    /// The access token in use (`None` with `[auth] mode = "off"`).
    pub fn token(&self) -> Option<String> {
        self.gate.token()
    }

    /// A probe of whether HTTP answers, for the watchdog.
    pub fn http_probe(&self) -> HttpProbe {
        HttpProbe::new(self.router.clone(), self.metrics.clone())
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The pipeline's pulse: beats so far and the age of the last one.
    pub fn liveness(&self) -> &Liveness {
        &self.pipeline.liveness
    }

    /// Waits until every task and thread has stopped (after `shutdown` was cancelled). A
    /// capture thread blocked in a source that stopped delivering gets [`THREAD_GRACE`],
    /// then is left behind so that shutdown still completes.
    pub async fn wait(self) {
        self.tracker.wait().await;
        let mut threads = self.pipeline.into_threads();
        threads.push(self.roi);
        let _ = tokio::task::spawn_blocking(move || join_within(threads, THREAD_GRACE)).await;
    }
}

/// The access rules (the token, generated on first start) and the TLS acceptor.
fn access(
    settings: &Settings,
    metrics: &Arc<Metrics>,
) -> Result<(Arc<Gate>, Option<TlsAcceptor>), StartError> {
    let advertised: Vec<String> = settings
        .mqtt
        .iter()
        .filter_map(|m| m.advertise.clone())
        .collect();
    let (gate, generated) =
        Gate::new(&settings.auth, &settings.http, &advertised, metrics.clone())?;
    if generated {
        tracing::info!(file = %settings.auth.token_file.display(), "generated an access token");
    }
    if !gate.enabled() {
        tracing::warn!(
            "[auth] mode = \"off\": anyone who reaches {} may watch and command this camera",
            settings.listen
        );
    }
    let tls = match &settings.http.tls {
        Some((cert, key)) => Some(http::server::tls_acceptor(cert, key)?),
        None => None,
    };
    Ok((Arc::new(gate), tls))
}

/// The video pipeline, encoding into `frames`, and the ROI detector's thread beside it.
fn video(
    settings: &Settings,
    control: &Arc<Control>,
    metrics: &Arc<Metrics>,
    frames: HubSender,
    shutdown: &CancellationToken,
) -> Result<(Pipeline, std::thread::JoinHandle<()>), StartError> {
    let detector_frames = Arc::new(LatestSlot::new());
    let pipeline = Pipeline::start(
        &CaptureSpec::from_settings(settings),
        &settings.video,
        control.clone(),
        metrics.clone(),
        frames,
        detector_frames.clone(),
        shutdown.clone(),
    )?;
    control.set_backends(
        pipeline.encoder.clone(),
        pipeline.encoder_reason.clone(),
        pipeline.source.clone(),
    );
    let stamp_rows = if pipeline.has_stamp {
        focusd_board::stamp::band_height(pipeline.lores_size.1)
    } else {
        0
    };
    let roi = roi::spawn(
        settings.roi.clone(),
        stamp_rows,
        detector_frames,
        control.clone(),
        metrics.clone(),
        settings.roi.fps.min(pipeline.fps),
        shutdown.clone(),
    )
    .map_err(|e| StartError::Pipeline(PipelineError::Thread(e)))?;
    Ok((pipeline, roi))
}

/// The HTTP listener and the address it is bound to (the port chosen with port 0).
async fn listen(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let failed = |source| StartError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

/// What every door started by [`Daemon::start`] shares.
struct Wiring<'a> {
    settings: &'a Settings,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    /// Runs every door's task and restarts it when it panics.
    supervisor: Supervisor,
    pipeline: &'a Pipeline,
    tracker: &'a TaskTracker,
    shutdown: &'a CancellationToken,
}

impl Wiring<'_> {
    /// The viewers' path: the relay (when configured) on the hub queue, the WebRTC hub
    /// behind it, and the WHIP publisher on the hub.
    async fn viewers(&self, frames: HubReceiver) -> Result<WebRtcHandle, StartError> {
        let (settings, pipeline) = (self.settings, self.pipeline);
        let frames = match &settings.relay {
            Some(relay) => {
                let (to_hub, frames_for_hub) = fanout::hub_queue();
                RelayTask {
                    settings: relay.clone(),
                    frames,
                    hub: to_hub,
                    keyframes: pipeline.keyframes.clone(),
                    demand: pipeline.demand.clone(),
                    keyframe_request_interval: settings.webrtc.keyframe_request_interval,
                    control: self.control.clone(),
                    metrics: self.metrics.clone(),
                }
                .spawn(self.tracker, &self.supervisor, self.shutdown.clone())
                .await?;
                frames_for_hub
            }
            None => frames,
        };
        let sockets = bind_sockets(settings.listen.ip(), settings.webrtc.udp_port)
            .await
            .map_err(StartError::Media)?;
        let reflexive = reflexive::discover(
            &sockets,
            &settings.webrtc.advertise,
            settings.webrtc.stun_server.as_deref(),
        )
        .await;
        let webrtc = HubTask {
            sockets,
            reflexive,
            settings: settings.webrtc.clone(),
            bounds: Bounds {
                context_kbps: settings.video.context_kbps,
                source_kbps: settings.video.source_kbps,
            },
            targets: pipeline.targets.clone(),
            frames,
            control: self.control.clone(),
            keyframes: pipeline.keyframes.clone(),
            demand: pipeline.demand.clone(),
            keep_configured_rates: settings.relay.is_some(),
            metrics: self.metrics.clone(),
        }
        .spawn(self.tracker, &self.supervisor, self.shutdown.clone())
        .map_err(StartError::Media)?;
        if let Some(whip) = &settings.whip {
            WhipTask {
                settings: whip.clone(),
                webrtc: webrtc.clone(),
            }
            .spawn(self.tracker, &self.supervisor, self.shutdown.clone());
        }
        Ok(webrtc)
    }

    /// The HTTP server on `listener`; returns its routes (for the watchdog's probe).
    fn http(
        &self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        webrtc: WebRtcHandle,
        gate: Arc<Gate>,
    ) -> axum::Router {
        let (settings, pipeline) = (self.settings, self.pipeline);
        let router = http::router(
            http::AppState {
                control: self.control.clone(),
                metrics: self.metrics.clone(),
                webrtc,
                liveness: pipeline.liveness.clone(),
                body_timeout: settings.http.body_timeout,
                webrtc_config: Arc::new(WebRtcConfig {
                    ice_servers: settings.webrtc.ice_servers.clone(),
                }),
                pictures: Pictures::new(
                    pipeline.pictures.clone(),
                    self.control.clone(),
                    self.metrics.clone(),
                    pipeline.stamp_rows,
                    pipeline.fps,
                    self.shutdown.clone(),
                ),
            },
            gate,
        );
        let mut limits = settings.http.clone();
        http::server::fit_to_file_limit(&mut limits);
        let server = Server {
            listener,
            tls,
            router: router.clone(),
            limits,
            metrics: self.metrics.clone(),
        };
        self.supervisor
            .spawn(self.tracker, server, self.shutdown.clone());
        router
    }

    /// The RTSP door on the HTTP address's IP, when configured and in this build; where
    /// it listens. A port taken is an error only when the port was configured.
    fn rtsp(
        &self,
        http_addr: SocketAddr,
        gate: &Arc<Gate>,
    ) -> Result<Option<SocketAddr>, StartError> {
        let port = match self.settings.rtsp.port {
            None => return Ok(None),
            Some(_) if !cfg!(feature = "gstreamer") => return Ok(None),
            Some(port) => port,
        };
        let pipeline = self.pipeline;
        let door = RtspDoor {
            addr: SocketAddr::new(http_addr.ip(), port),
            taps: pipeline.taps.clone(),
            demand: pipeline.demand.clone(),
            keyframes: pipeline.keyframes.clone(),
            gate: gate.clone(),
            control: self.control.clone(),
            supervisor: self.supervisor.clone(),
            tracker: self.tracker.clone(),
        };
        match door.start(self.shutdown.clone()) {
            Ok(addr) => Ok(Some(addr)),
            Err(e) if !self.settings.rtsp.configured => {
                tracing::warn!("{e}; RTSP is off ([rtsp] port sets another)");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The MQTT client, when a broker is configured, registering the daemon as reached at
    /// `http_addr`.
    fn mqtt(&self, http_addr: SocketAddr) -> Result<(), StartError> {
        let Some(mqtt) = &self.settings.mqtt else {
            return Ok(());
        };
        MqttTask {
            settings: mqtt.clone(),
            device_id: self.settings.device_id.clone(),
            info: registration(self.settings, mqtt, self.pipeline, http_addr),
            control: self.control.clone(),
            metrics: self.metrics.clone(),
        }
        .spawn(self.tracker, &self.supervisor, self.shutdown.clone())?;
        Ok(())
    }
}

/// The MQTT registration: who this device is and where a viewer or console reaches it.
fn registration(
    settings: &Settings,
    mqtt: &MqttSettings,
    pipeline: &Pipeline,
    http_addr: SocketAddr,
) -> Info {
    let host = match &mqtt.advertise {
        Some(h) => h.clone(),
        None => advertised_ip(http_addr.ip()).to_string(),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let scheme = if settings.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let base = format!("{scheme}://{host}:{}", http_addr.port());
    let track = |(width, height): (u32, u32), kbps| TrackInfo {
        width,
        height,
        fps: pipeline.fps,
        kbps,
    };
    Info {
        id: settings.device_id.clone(),
        name: mqtt.name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        board: focusd_board::probe::Board::detect().name().to_string(),
        encoder: pipeline.encoder.clone(),
        encoder_reason: pipeline.encoder_reason.clone(),
        source: pipeline.source.clone(),
        signaling_url: format!("{base}/offer"),
        whep_url: format!("{base}/whep"),
        viewer_url: format!("{base}/"),
        tracks: TrackMap {
            context: track(pipeline.lores_size, settings.video.context_kbps),
            source: track(pipeline.main_size, settings.video.source_kbps),
        },
        modes: Mode::ALL.to_vec(),
    }
}

/// The address to advertise for a listener on `ip`: itself, or for a wildcard listener
/// the first non-loopback IPv4 address (loopback when there is none).
fn advertised_ip(ip: IpAddr) -> IpAddr {
    if !ip.is_unspecified() {
        return ip;
    }
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .find(|a| a.is_ipv4() && !a.is_loopback())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), StartError> {
    Daemon::start(settings, shutdown).await?.wait().await;
    Ok(())
}

/// Once a second, turns counters into the rates of the state JSON.
struct Rates {
    control: Arc<Control>,
    metrics: Arc<Metrics>,
}

impl Supervised for Rates {
    fn part(&self) -> Part {
        Part::Rates
    }

    fn run(
        &mut self,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        rates(&self.control, &self.metrics, shutdown)
    }
}

async fn rates(control: &Control, metrics: &Metrics, shutdown: CancellationToken) {
    // From the counters as they are now: a restarted task must not count since the start.
    let counters = || {
        (
            Instant::now(),
            metrics.frames_captured.get(),
            TrackMap::from_fn(|t| metrics.track(t).bytes.get()),
        )
    };
    let mut last = counters();
    let second = Duration::from_secs(1);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (now, frames, bytes) = counters();
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
        let kbps =
            |t: Track| ((bytes[t] - last.2[t]) as f64 * 8.0 / 1000.0 / dt * 10.0).round() / 10.0;
        let fps = ((frames - last.1) as f64 / dt * 10.0).round() / 10.0;
        control.set_rates(
            fps,
            Bitrates {
                context: kbps(Track::Context),
                source: kbps(Track::Source),
            },
        );
        last = (now, frames, bytes);
    }
}
