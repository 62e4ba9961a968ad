//! `focusd ctl`: a small fleet console over the MQTT broker.
//!
//! * `list`: every device's retained registration and availability;
//! * `watch [ID]`: state, stats, events and availability as they arrive;
//! * `mode ID MODE`, `rect ID X1 Y1 X2 Y2`: send a command and wait for its `cmd/result`.
//!
//! Exit status: 0 done (also when the reader of stdout goes away: `watch` then stops), 1
//! refused by the device or no answer in time, 2 bad usage or configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeFilter};

use crate::cli::stdout::{StdoutError, outln};
use crate::config::{self, CtlAction, CtlFlags, FileConfig, MqttSettings};
use crate::state::command::{Command, Mode, Rect, RectChange};
use crate::state::protocol::{CommandResult, Info, Topics};

/// How `ctl` ended, for the exit status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    /// Bad arguments or configuration (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The device refused, did not answer, or the broker is unreachable (exit status 1).
    #[error("{0}")]
    Failed(String),
    /// Stdout could not be written: quietly 0 when its reader went away, else 1.
    #[error(transparent)]
    Output(#[from] StdoutError),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            CtlError::Failed(_) => 1,
            CtlError::Output(e) => e.exit_code(),
        }
    }
}

/// Runs one `ctl` action, printing to stdout.
pub async fn run(flags: &CtlFlags, config: Option<&std::path::Path>) -> Result<(), CtlError> {
    let settings = settings(flags, config)?;
    let timeout = Duration::from_secs_f64(flags.timeout.clamp(0.1, 600.0));
    let command = match &flags.action {
        CtlAction::Mode { id, mode } => {
            let Some(m) = Mode::parse(mode) else {
                return Err(CtlError::Usage(format!(
                    "unknown mode `{mode}`: use LOW, HIGH, VISION or HYBRID"
                )));
            };
            Some((id, Some(m), RectChange::Keep))
        }
        CtlAction::Rect { id, x1, y1, x2, y2 } => {
            // Checked here with the devices' own rules: a bad rectangle fails fast.
            let rect = Rect {
                x1: *x1,
                y1: *y1,
                x2: *x2,
                y2: *y2,
            }
            .validated()
            .map_err(|e| CtlError::Usage(e.0))?;
            Some((id, None, RectChange::Set(rect)))
        }
        _ => None,
    };
    if let Some((id, mode, hybrid_rect)) = command {
        let command = Command {
            mode,
            hybrid_rect,
            id: Some(format!("ctl-{:x}", getrandom::u64().unwrap_or(0))),
        };
        return send(&settings, id, &command, timeout).await;
    }
    match &flags.action {
        CtlAction::List => list(&settings, timeout).await,
        CtlAction::Watch { id } => watch(&settings, id.as_deref()).await,
        _ => unreachable!("commands were handled above"),
    }
}

fn settings(flags: &CtlFlags, config: Option<&std::path::Path>) -> Result<MqttSettings, CtlError> {
    let file = match config {
        Some(path) => config::read_file(path).map_err(|e| CtlError::Usage(e.to_string()))?,
        None => FileConfig::default(),
    };
    let mut mqtt = file.mqtt;
    if flags.ca_file.is_some() {
        mqtt.ca_file = flags.ca_file.clone();
    }
    if flags.prefix.is_some() {
        mqtt.prefix = flags.prefix.clone();
    }
    config::resolve_mqtt(flags.broker.as_deref(), mqtt, "ctl")
        .map_err(|e| CtlError::Usage(e.to_string()))?
        .ok_or_else(|| {
            CtlError::Usage("no broker: give --broker URL or a --config with mqtt.url".into())
        })
}

/// Connects, subscribes to `topics`, and returns once the broker confirmed them.
async fn connect(
    settings: &MqttSettings,
    topics: &[String],
) -> Result<(AsyncClient, EventLoop), CtlError> {
    let id = format!("focusd-ctl-{:x}", getrandom::u64().unwrap_or(0));
    let mut o = MqttOptions::new(id, settings.broker.host.clone(), settings.broker.port);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    let b = &settings.broker;
    if let Some(user) = &b.username {
        o.set_credentials(user.clone(), b.password.clone().unwrap_or_default());
    }
    if let Some(t) = crate::doors::mqtt::client::transport(settings)
        .map_err(|e| CtlError::Usage(e.to_string()))?
    {
        o.set_transport(t);
    }
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    eventloop.set_network_options(crate::doors::mqtt::client::low_latency());
    // One SUBSCRIBE for all topics: retained messages then follow its single SUBACK.
    let filters = topics
        .iter()
        .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
    client
        .subscribe_many(filters)
        .await
        .map_err(|e| CtlError::Failed(format!("cannot subscribe: {e}")))?;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => break,
            Ok(_) => {}
            Err(e) => {
                return Err(CtlError::Failed(format!(
                    "cannot reach the broker {}: {e}",
                    settings.broker
                )));
            }
        }
    }
    Ok((client, eventloop))
}

/// The next message within `within`: `Ok(None)` when the time is up.
async fn next_publish(
    eventloop: &mut EventLoop,
    within: Duration,
) -> Result<Option<(String, Vec<u8>)>, CtlError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let polled = tokio::time::timeout_at(deadline, eventloop.poll()).await;
        match polled {
            Err(_) => return Ok(None),
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                return Ok(Some((p.topic, p.payload.to_vec())));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(CtlError::Failed(format!("lost the broker: {e}"))),
        }
    }
}

/// Sends `command` to device `id` and waits for the result with its `id`.
async fn send(
    settings: &MqttSettings,
    id: &str,
    command: &Command,
    timeout: Duration,
) -> Result<(), CtlError> {
    let topics = Topics::new(&settings.prefix, id);
    let (client, mut eventloop) =
        connect(settings, std::slice::from_ref(&topics.cmd_result)).await?;
    let started = tokio::time::Instant::now();
    client
        .publish(topics.cmd, QoS::AtLeastOnce, false, command.to_json())
        .await
        .map_err(|e| CtlError::Failed(format!("cannot publish: {e}")))?;
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        let Some((_, payload)) = next_publish(&mut eventloop, left).await? else {
            return Err(CtlError::Failed(format!(
                "no answer from `{id}` within {:.1} s (is it online? try `focusd ctl list`)",
                timeout.as_secs_f64()
            )));
        };
        let Ok(result) = serde_json::from_slice::<CommandResult>(&payload) else {
            continue;
        };
        if result.id != command.id {
            continue; // someone else's command
        }
        let _ = client.disconnect().await;
        return if result.ok {
            outln!("{id}: ok ({} ms)", started.elapsed().as_millis())?;
            Ok(())
        } else {
            Err(CtlError::Failed(format!(
                "{id} refused: {}",
                result.error.as_deref().unwrap_or("no reason given")
            )))
        };
    }
}

/// One device as `list` shows it.
#[derive(Default)]
struct Device {
    available: Option<String>,
    info: Option<Info>,
}

async fn list(settings: &MqttSettings, timeout: Duration) -> Result<(), CtlError> {
    let p = &settings.prefix;
    let (client, mut eventloop) = connect(
        settings,
        &[format!("{p}/+/info"), format!("{p}/+/available")],
    )
    .await?;
    let mut devices: BTreeMap<String, Device> = BTreeMap::new();
    // Retained messages arrive right after the subscription; stop once they pause.
    let quiet = Duration::from_millis(300).min(timeout);
    while let Some((topic, payload)) = next_publish(&mut eventloop, quiet).await? {
        let mut parts = topic.rsplitn(2, '/');
        let (Some(leaf), Some(rest)) = (parts.next(), parts.next()) else {
            continue;
        };
        let id = rest.rsplit('/').next().unwrap_or(rest).to_string();
        let d = devices.entry(id).or_default();
        match leaf {
            "available" => d.available = Some(String::from_utf8_lossy(&payload).into_owned()),
            "info" => d.info = serde_json::from_slice(&payload).ok(),
            _ => {}
        }
    }
    let _ = client.disconnect().await;
    if devices.is_empty() {
        outln!("no devices under `{p}/` on {}", settings.broker)?;
        return Ok(());
    }
    outln!(
        "{:<20} {:<10} {:<16} {:<10} viewer",
        "id",
        "available",
        "board",
        "encoder"
    )?;
    for (id, d) in &devices {
        let field = |f: fn(&Info) -> &str| d.info.as_ref().map_or("-", f);
        outln!(
            "{:<20} {:<10} {:<16} {:<10} {}",
            id,
            d.available.as_deref().unwrap_or("-"),
            field(|i| &i.board),
            field(|i| &i.encoder),
            field(|i| &i.viewer_url)
        )?;
    }
    Ok(())
}

async fn watch(settings: &MqttSettings, id: Option<&str>) -> Result<(), CtlError> {
    let p = &settings.prefix;
    let who = id.unwrap_or("+");
    let topics: Vec<String> = ["state", "stats", "events", "available"]
        .iter()
        .map(|leaf| format!("{p}/{who}/{leaf}"))
        .collect();
    let (_client, mut eventloop) = connect(settings, &topics).await?;
    // Ends cleanly on Ctrl-C or SIGTERM.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CtlError::Failed(format!("cannot watch for SIGTERM: {e}")))?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            next = next_publish(&mut eventloop, Duration::from_secs(3600)) => {
                if let Some((topic, payload)) = next? {
                    outln!("{topic} {}", String::from_utf8_lossy(&payload))?;
                }
            }
        }
    }
}
