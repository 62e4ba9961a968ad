//! Broker addresses: `mqtt://[user[:password]@]host[:port]` (port 1883) and `mqtts://...`
//! (TLS, port 8883).

use std::fmt;

/// Where the broker is and how to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct Broker {
    /// TLS (`mqtts://`) or plain TCP (`mqtt://`).
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// From the URL's user info; the config's `mqtt.username` overrides it.
    pub username: Option<String>,
    pub password: Option<String>,
}

// The password never reaches a log line.
impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for Broker {
    type Err = String;
    fn from_str(url: &str) -> Result<Broker, String> {
        Broker::parse(url)
    }
}

impl Broker {
    /// Parses a broker URL; the error says what is wrong in one line.
    pub fn parse(url: &str) -> Result<Broker, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!("`{url}` must start with mqtt:// or mqtts://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(format!("`{url}`: a broker URL has no path or query"));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (name, pass) = match u.split_once(':') {
                    Some((n, p)) => (n, Some(p)),
                    None => (u, None),
                };
                (
                    Some(percent_decode(name).ok_or_else(|| format!("`{url}`: bad %-escape"))?),
                    pass.map(|p| percent_decode(p).ok_or_else(|| format!("`{url}`: bad %-escape")))
                        .transpose()?,
                )
            }
        };
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: unclosed [ in the host"))?;
            match after {
                "" => (h, None),
                p => (
                    h,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| format!("`{url}`: expected :PORT after ]"))?,
                    ),
                ),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("`{url}`: port `{p}` is not 1-65535")),
            },
        };
        Ok(Broker {
            tls,
            host: host.to_string(),
            port,
            username,
            password,
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schemes_ports_and_logins() {
        let b = Broker::parse("mqtt://broker.local").unwrap();
        assert_eq!(
            (b.tls, b.host.as_str(), b.port),
            (false, "broker.local", 1883)
        );
        let b = Broker::parse("mqtts://10.0.0.2:9000/").unwrap();
        assert_eq!((b.tls, b.host.as_str(), b.port), (true, "10.0.0.2", 9000));
        assert_eq!(Broker::parse("mqtts://h").unwrap().port, 8883);
        let b = Broker::parse("mqtt://cam%40site:p%3Ass@h:1884").unwrap();
        assert_eq!(b.username.as_deref(), Some("cam@site"));
        assert_eq!(b.password.as_deref(), Some("p:ss"));
        let b = Broker::parse("mqtt://[::1]:1999").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 1999));
        assert_eq!(b.to_string(), "mqtt://[::1]:1999");
        assert!(!format!("{:?}", Broker::parse("mqtt://u:secret@h").unwrap()).contains("secret"));
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        for bad in [
            "tcp://h",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://h:x",
            "mqtt://h/topic",
            "mqtt://[::1",
            "mqtt://u%zz@h",
        ] {
            assert!(Broker::parse(bad).is_err(), "{bad}");
        }
    }
}
