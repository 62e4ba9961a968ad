//! Drives a [`Session`] with rumqttc: one task owns the connection, reconnects with capped
//! exponential backoff and jitter, and never blocks the daemon. Requests go into
//! rumqttc's bounded queue with `try_*`; what does not fit is counted and dropped.
//!
//! It speaks MQTT 5 so that it can tell the broker the largest packet it takes
//! ([`MAX_INCOMING_PACKET`]): a command up to 1 MiB arrives and is answered on
//! `cmd/result` (with an error: a command is at most 4 KiB), and the broker discards
//! anything larger for this client instead of sending it, so no publish, however big,
//! breaks the connection (MQTT 3.1.1 has no such property: the client could only drop
//! the connection, and the broker would publish the last will `offline`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::{NetworkOptions, Outgoing, TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::session::{Kind, Out, Session};
use super::telemetry::Telemetry;
use crate::backoff::Backoff;
use crate::config::MqttSettings;
use crate::service::metrics::Metrics;
use crate::service::supervisor::{Supervised, Supervisor};
use crate::state::protocol::{Info, Topics};
use crate::state::{Control, Part, unix_ms};

/// Requests rumqttc may hold before `try_*` refuses more.
const QUEUE: usize = 64;
/// First wait after a failed connection; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// How long shutdown waits for `stopped` to reach the broker.
const STOP_GRACE: Duration = Duration::from_millis(500);
/// The largest packet the broker may send us: a 1 MiB command with its topic and
/// properties. Larger publishes on `cmd` are discarded by the broker.
pub const MAX_INCOMING_PACKET: u32 = 1024 * 1024 + 4096;

/// Why the MQTT client cannot be set up (a configuration problem: exit status 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttError {
    /// A TLS file is unreadable or not PEM of the expected kind.
    #[error("invalid config `{key}`: {reason}")]
    Tls { key: &'static str, reason: String },
}

/// Everything the MQTT task needs.
pub struct MqttTask {
    /// Broker, TLS files, prefix and intervals.
    pub settings: MqttSettings,
    /// The `<id>` level of every topic, and the client id `focusd-<id>`.
    pub device_id: String,
    /// The registration published (retained) on every connect.
    pub info: Info,
    /// The one state: commands are applied to it, its changes are published.
    pub control: Arc<Control>,
    /// Counters for `stats`, and where MQTT's own connects and drops are counted.
    pub metrics: Arc<Metrics>,
}

impl MqttTask {
    /// Checks the TLS files and starts the task on `tracker`, supervised (a panic starts
    /// it again with a new connection); it runs until `shutdown`, then publishes `stopped`
    /// and disconnects.
    pub fn spawn(
        self,
        tracker: &TaskTracker,
        supervisor: &Supervisor,
        shutdown: CancellationToken,
    ) -> Result<(), MqttError> {
        let options = options(&self.settings, &self.device_id)?;
        tracing::info!(broker = %self.settings.broker, id = %self.device_id, "MQTT: connecting");
        let service = MqttService {
            task: self,
            options,
            tracker: tracker.clone(),
        };
        supervisor.spawn(tracker, service, shutdown);
        Ok(())
    }
}

/// The MQTT task under supervision: each run connects afresh.
struct MqttService {
    task: MqttTask,
    /// The client's options, checked once at start.
    options: MqttOptions,
    /// Where the connection task of each run is spawned.
    tracker: TaskTracker,
}

impl Supervised for MqttService {
    fn part(&self) -> Part {
        Part::Mqtt
    }

    fn run(
        &mut self,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        let (client, eventloop) = AsyncClient::new(self.options.clone(), QUEUE);
        let t = &self.task;
        let session = Session::new(
            Topics::new(&t.settings.prefix, &t.device_id),
            &t.info,
            t.settings.stats_interval,
            t.settings.home_assistant,
        );
        run(t, client, eventloop, session, &self.tracker, shutdown)
    }
}

fn read_pem(key: &'static str, path: &Path, marker: &str) -> Result<Vec<u8>, MqttError> {
    let bytes = std::fs::read(path).map_err(|e| MqttError::Tls {
        key,
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    if !String::from_utf8_lossy(&bytes).contains(marker) {
        return Err(MqttError::Tls {
            key,
            reason: format!("{} holds no PEM `{marker}`", path.display()),
        });
    }
    Ok(bytes)
}

/// Debian's bundle of trusted roots, used for `mqtts://` without `mqtt.ca_file`.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn options(s: &MqttSettings, device_id: &str) -> Result<MqttOptions, MqttError> {
    let b = &s.broker;
    let mut o = MqttOptions::new(format!("focusd-{device_id}"), b.host.clone(), b.port);
    o.set_keep_alive(s.keep_alive);
    o.set_clean_start(true);
    o.set_max_packet_size(Some(MAX_INCOMING_PACKET));
    let available = Topics::new(&s.prefix, device_id).available;
    o.set_last_will(LastWill::new(
        available,
        "offline",
        QoS::AtLeastOnce,
        true,
        None,
    ));
    if let Some(user) = &b.username {
        o.set_credentials(user.clone(), b.password.clone().unwrap_or_default());
    }
    if let Some(t) = transport(s)? {
        o.set_transport(t);
    }
    o.set_network_options(low_latency());
    Ok(o)
}

/// Commands and their results are tiny: send them at once (TCP_NODELAY), not after
/// Nagle's wait for the previous packet's acknowledgement.
pub(crate) fn low_latency() -> NetworkOptions {
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net
}

/// For `mqtts://`: TLS with the configured or the system's roots (`None`: plain TCP).
pub(crate) fn transport(s: &MqttSettings) -> Result<Option<Transport>, MqttError> {
    let b = &s.broker;
    if b.tls {
        let ca = match &s.ca_file {
            Some(path) => read_pem("mqtt.ca_file", path, "BEGIN CERTIFICATE")?,
            None => read_pem("mqtt.ca_file", Path::new(SYSTEM_ROOTS), "BEGIN CERTIFICATE")?,
        };
        let client_auth = match &s.client_auth {
            Some((cert, key)) => Some((
                read_pem("mqtt.cert_file", cert, "BEGIN CERTIFICATE")?,
                read_pem("mqtt.key_file", key, "PRIVATE KEY")?,
            )),
            None => None,
        };
        return Ok(Some(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        })));
    }
    Ok(None)
}

/// Queues `outs` without waiting. A full queue drops the message and counts it; a
/// dropped state is marked to be published again.
fn send(client: &AsyncClient, session: &mut Session, metrics: &Metrics, outs: Vec<Out>) {
    for out in outs {
        let queued = match out {
            Out::Subscribe(topic) => client.try_subscribe(topic, QoS::AtLeastOnce).is_ok(),
            Out::Publish {
                topic,
                payload,
                retain,
                kind,
            } => {
                // Telemetry may be lost; everything else is acknowledged by the broker.
                let qos = match kind {
                    Kind::Stats | Kind::Event => QoS::AtMostOnce,
                    _ => QoS::AtLeastOnce,
                };
                let ok = client.try_publish(topic, qos, retain, payload).is_ok();
                if !ok && kind == Kind::State {
                    session.state_dropped();
                }
                ok
            }
        };
        if !queued {
            metrics.mqtt_dropped.inc();
        }
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("broker refused the connection: {code:?}")
        }
        other => other.to_string(),
    }
}

/// What the connection task reports to the session task.
#[derive(Debug)]
enum Net {
    /// The broker accepted a (re)connection.
    Connected,
    /// A command arrived.
    Command(bytes::Bytes),
    /// A change to the picture doors arrived.
    Streams(bytes::Bytes),
    /// The connection failed or dropped; the next attempt is in the given time.
    Lost { error: String, retry_in: Duration },
    /// Our DISCONNECT went out (clean shutdown).
    Disconnected,
}

/// Polls rumqttc's event loop and nothing else, so that a slow connect or TLS handshake
/// is never cancelled by other work; backs off between failed attempts.
async fn connection(
    mut eventloop: EventLoop,
    cmd_topic: String,
    streams_topic: String,
    tx: mpsc::Sender<Net>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = eventloop.poll() => e,
        };
        let report = match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                Net::Connected
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == cmd_topic.as_bytes() => {
                Net::Command(p.payload)
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == streams_topic.as_bytes() => {
                Net::Streams(p.payload)
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => Net::Disconnected,
            Ok(_) => continue,
            Err(e) => {
                let retry_in = backoff.next(getrandom::u64().unwrap_or(0));
                let _ = tx
                    .send(Net::Lost {
                        error: describe(&e),
                        retry_in,
                    })
                    .await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retry_in) => {}
                }
                continue;
            }
        };
        if tx.send(report).await.is_err() {
            return;
        }
    }
}

async fn run(
    task: &MqttTask,
    client: AsyncClient,
    eventloop: EventLoop,
    mut session: Session,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    let MqttTask {
        settings,
        control,
        metrics,
        ..
    } = task;
    let (tx, mut net) = mpsc::channel(QUEUE);
    let stop = CancellationToken::new();
    // A run that panics takes its connection with it.
    let _stop_on_drop = stop.clone().drop_guard();
    tracker.spawn(connection(
        eventloop,
        session.topics().cmd.clone(),
        session.topics().streams_set.clone(),
        tx,
        stop.clone(),
    ));
    let mut changes = control.subscribe();
    let mut telemetry = Telemetry::new(Instant::now(), metrics);
    let mut failures = 0u32;
    // The picture doors' settings as last published.
    let mut published_streams = control.streams();
    loop {
        let now = Instant::now();
        let wake = session
            .next_deadline()
            .unwrap_or(now + Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(report) = net.recv() => match report {
                Net::Connected => {
                    if failures > 0 {
                        tracing::info!(broker = %settings.broker, "MQTT: reconnected after {failures} failed attempts");
                    } else {
                        tracing::info!(broker = %settings.broker, "MQTT: connected");
                    }
                    failures = 0;
                    metrics.mqtt_connects.inc();
                    let outs = session.connected(Instant::now(), &control.snapshot());
                    send(&client, &mut session, metrics, outs);
                    published_streams = control.streams();
                    let outs = session.streams(&published_streams, true);
                    send(&client, &mut session, metrics, outs);
                }
                Net::Command(payload) => {
                    let outs = session.command(Instant::now(), &payload, control);
                    send(&client, &mut session, metrics, outs);
                }
                Net::Streams(payload) => {
                    let outs = session.streams_command(&payload, control);
                    published_streams = control.streams();
                    send(&client, &mut session, metrics, outs);
                }
                Net::Lost { error, retry_in } => {
                    session.disconnected();
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(broker = %settings.broker, %error, ?retry_in, "MQTT: connection lost; video is unaffected");
                    } else {
                        tracing::debug!(%error, ?retry_in, "MQTT: still unreachable");
                    }
                }
                Net::Disconnected => {}
            },
            Ok(()) = changes.changed() => {
                changes.mark_unchanged();
                session.state_changed(&control.snapshot());
                // Changed through HTTP: the retained settings follow.
                let streams = control.streams();
                if streams != published_streams {
                    published_streams = streams;
                    let outs = session.streams(&streams, false);
                    send(&client, &mut session, metrics, outs);
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        let now = Instant::now();
        let outs = session.poll(now, &control.snapshot(), unix_ms());
        send(&client, &mut session, metrics, outs);
        if session.stats_due(now) {
            let stats = telemetry.stats(now, control, metrics, metrics.mqtt_dropped.get());
            let out = session.stats(&stats);
            send(&client, &mut session, metrics, vec![out]);
        }
    }
    // Clean shutdown: `stopped`, then DISCONNECT (so the broker does not send the will).
    if session.is_connected() {
        let out = session.stopping();
        send(&client, &mut session, metrics, vec![out]);
        let _ = client.try_disconnect();
        let sent = tokio::time::timeout(STOP_GRACE, async {
            while let Some(report) = net.recv().await {
                if matches!(report, Net::Disconnected | Net::Lost { .. }) {
                    return matches!(report, Net::Disconnected);
                }
            }
            false
        })
        .await;
        if sent == Ok(true) {
            tracing::info!("MQTT: published `stopped` and disconnected");
        } else {
            tracing::warn!("MQTT: `stopped` may not have reached the broker");
        }
    }
    stop.cancel();
}
