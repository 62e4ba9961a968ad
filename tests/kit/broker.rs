//! A real mosquitto broker for one test, on a free loopback port, and a small MQTT client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{Client, Connection, Event, MqttOptions, NetworkOptions, Packet, QoS};

use crate::free_port;

/// A mosquitto process with its config in a directory of the caller's.
#[derive(Debug)]
pub struct Mosquitto {
    /// Its loopback port.
    pub port: u16,
    /// Its config file; the log is beside it.
    conf: PathBuf,
    /// The process, while it runs.
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts a broker with `extra` config lines (e.g. TLS) after the listener line;
    /// panics if it does not listen.
    pub fn start(dir: &Path, extra: &str) -> Mosquitto {
        Self::try_start(dir, extra).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts a broker with `extra` config lines after the listener line.
    pub fn try_start(dir: &Path, extra: &str) -> anyhow::Result<Mosquitto> {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        // TCP_NODELAY, as anyone who cares about command latency sets.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n\
                 persistence false\nuser root\nlog_dest stderr\n{extra}\n"
            ),
        )?;
        let mut m = Mosquitto {
            port,
            conf,
            child: None,
        };
        m.try_restart()?;
        Ok(m)
    }

    /// Starts (again) on the same port, with no retained messages: a broker that lost
    /// its state. Panics if it does not listen.
    pub fn restart(&mut self) {
        self.try_restart().unwrap_or_else(|e| panic!("{e:#}"));
    }

    fn try_restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "broker already running");
        let log = std::fs::File::create(self.conf.with_extension("log"))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("mosquitto runs (apt-get install mosquitto)")?;
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(
                Instant::now() < end,
                "mosquitto did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Kills the broker at once (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The retained message on `topic`, as a console that connects now gets it: a new
    /// subscriber each try until one is handed a retained message, for at most `within`.
    /// (A subscriber that came before the publish gets it live, without the retain flag,
    /// so waiting for the flag on a subscriber made before the daemon registered races.)
    pub fn retained(&self, topic: &str, within: Duration) -> Message {
        let end = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let mut w = Watcher::connect(self.port, &[topic]);
            // The broker sends what it retains right after the SUBACK.
            match w.next(left.min(Duration::from_millis(200))) {
                Some(m) if m.retain => return m,
                Some(m) => seen.push(m.payload.chars().take(80).collect::<String>()),
                None => {}
            }
        }
        panic!("nothing retained on {topic} within {within:?}; saw live {seen:#?}");
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking MQTT client subscribed to some topics.
pub struct Watcher {
    pub client: Client,
    connection: Connection,
}

/// One received message.
#[derive(Clone, Debug)]
pub struct Message {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
}

impl Watcher {
    /// Connects to `port` and subscribes to `filters`, waiting for the broker's SUBACK.
    pub fn connect(port: u16, filters: &[&str]) -> Watcher {
        let id = format!("test-{:x}", getrandom::u64().unwrap());
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        // Room for the oversized commands the tests send.
        o.set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut connection) = Client::new(o, 64);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        connection.eventloop.set_network_options(net);
        client
            .subscribe_many(
                filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce)),
            )
            .unwrap();
        let mut w = Watcher { client, connection };
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match w.connection.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => return w,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("test client: {e}"),
                Err(_) => panic!("no SUBACK from the broker"),
            }
        }
    }

    /// The next message within `within`.
    pub fn next(&mut self, within: Duration) -> Option<Message> {
        let end = Instant::now() + within;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            match self.connection.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    return Some(Message {
                        topic: p.topic,
                        payload: String::from_utf8_lossy(&p.payload).into_owned(),
                        retain: p.retain,
                    });
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("test client lost the broker: {e}"),
                Err(_) => return None,
            }
        }
    }

    /// Waits for a message on `topic` matching `pred`.
    pub fn wait_for(
        &mut self,
        topic: &str,
        within: Duration,
        pred: impl Fn(&Message) -> bool,
    ) -> Message {
        let end = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(m) if m.topic == topic && pred(&m) => return m,
                Some(m) => seen.push(format!(
                    "{} {}",
                    m.topic,
                    m.payload.chars().take(80).collect::<String>()
                )),
                None => break,
            }
        }
        panic!("nothing on {topic} within {within:?}; saw {seen:#?}");
    }

    pub fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .unwrap();
    }
}
