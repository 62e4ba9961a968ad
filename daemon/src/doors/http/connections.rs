//! The open HTTP connections and what each is doing, as a plain state machine (no I/O, no
//! clock of its own): the server asks it whether a new connection may come in, which one
//! gives way when the limit is reached, whether a request may start, and when an idle
//! connection has waited too long.
//!
//! The policy, so that strangers cannot starve the daemon:
//! * At most `max` connections are open. A new one at the limit takes the place of the
//!   connection that has been idle longest (no request in progress: still sending its
//!   headers, a TLS handshake, or a kept-alive connection between requests). When every
//!   connection is in the middle of a request, the new one is refused.
//! * A connection idle for longer than the header timeout is closed: a slowloris that
//!   never finishes its headers holds a slot for that long at most.
//! * The last `reserve` slots are for the requests that must always answer (`/healthz`,
//!   `/metrics`, signalling): any other request that would make more than `max - reserve`
//!   requests in progress is answered 503 at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A connection's number, unique for the life of the table.
pub type ConnId = u64;

/// What a new connection gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// It may be served; `evicted` is the idle connection that gave way, if any.
    Admitted { id: ConnId, evicted: Option<ConnId> },
    /// Every slot is in the middle of a request: close it.
    Refused,
}

#[derive(Debug)]
struct Conn {
    /// Requests in progress (HTTP/2 may carry several).
    in_flight: usize,
    /// When it last had no request in progress (its accept, or the end of its last
    /// request).
    idle_since: Instant,
}

/// The table of open connections (see the module docs for the policy).
#[derive(Debug)]
pub struct Connections {
    /// Open connections at most.
    max: usize,
    /// Slots kept for the requests that must always answer.
    reserve: usize,
    /// How long a connection may stay idle.
    idle_timeout: Duration,
    open: BTreeMap<ConnId, Conn>,
    next_id: ConnId,
    /// Requests in progress over all connections.
    in_flight: usize,
}

impl Connections {
    /// An empty table; `reserve` is clamped below `max`.
    pub fn new(max: usize, reserve: usize, idle_timeout: Duration) -> Connections {
        Connections {
            max: max.max(1),
            reserve: reserve.min(max.saturating_sub(1)),
            idle_timeout,
            open: BTreeMap::new(),
            next_id: 0,
            in_flight: 0,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// A new connection arrives at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        let mut evicted = None;
        if self.open.len() >= self.max {
            evicted = self.evict_longest_idle();
            if evicted.is_none() {
                return Admission::Refused;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.open.insert(
            id,
            Conn {
                in_flight: 0,
                idle_since: now,
            },
        );
        Admission::Admitted { id, evicted }
    }

    /// Takes out the connection idle longest, if any, to make room; the caller closes it.
    pub fn evict_longest_idle(&mut self) -> Option<ConnId> {
        let id = self
            .open
            .iter()
            .filter(|(_, c)| c.in_flight == 0)
            .min_by_key(|(id, c)| (c.idle_since, **id))
            .map(|(id, _)| *id)?;
        self.open.remove(&id);
        Some(id)
    }

    /// A request on `id` has its headers and wants to start; `priority` requests may use
    /// the reserve. `false`: answer 503 without running it (it is not counted).
    pub fn begin(&mut self, id: ConnId, priority: bool) -> bool {
        let limit = if priority {
            self.max
        } else {
            self.max - self.reserve
        };
        if self.in_flight >= limit {
            return false;
        }
        // An evicted connection (being closed) starts nothing.
        let Some(c) = self.open.get_mut(&id) else {
            return false;
        };
        c.in_flight += 1;
        self.in_flight += 1;
        true
    }

    /// A request begun on `id` has finished at `now`.
    pub fn end(&mut self, id: ConnId, now: Instant) {
        // A connection closed mid-request took its requests out of the count already.
        if let Some(c) = self.open.get_mut(&id) {
            self.in_flight = self.in_flight.saturating_sub(1);
            c.in_flight = c.in_flight.saturating_sub(1);
            if c.in_flight == 0 {
                c.idle_since = now;
            }
        }
    }

    /// The connection has closed (or was evicted: then this does nothing).
    pub fn close(&mut self, id: ConnId) {
        if let Some(c) = self.open.remove(&id) {
            // Requests still counted (a connection dropped mid-request) end with it.
            self.in_flight = self.in_flight.saturating_sub(c.in_flight);
        }
    }

    /// When `id` times out if it stays idle: `None` while a request is in progress or
    /// once it is gone.
    pub fn idle_deadline(&self, id: ConnId) -> Option<Instant> {
        let c = self.open.get(&id)?;
        (c.in_flight == 0).then_some(c.idle_since + self.idle_timeout)
    }

    /// Whether `id` is still in the table (it may have been evicted).
    pub fn contains(&self, id: ConnId) -> bool {
        self.open.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    fn admitted(a: Admission) -> (ConnId, Option<ConnId>) {
        match a {
            Admission::Admitted { id, evicted } => (id, evicted),
            Admission::Refused => panic!("refused"),
        }
    }

    #[test]
    fn at_the_limit_the_longest_idle_connection_gives_way() {
        let t0 = Instant::now();
        let mut c = Connections::new(3, 1, T);
        let (a, _) = admitted(c.admit(t0));
        let (b, _) = admitted(c.admit(t0 + Duration::from_secs(1)));
        let (d, _) = admitted(c.admit(t0 + Duration::from_secs(2)));
        // `a` is busy: `b` is the longest idle.
        assert!(c.begin(a, false));
        let (e, evicted) = admitted(c.admit(t0 + Duration::from_secs(3)));
        assert_eq!(evicted, Some(b));
        assert!(!c.contains(b) && c.contains(e) && c.contains(d));
        assert_eq!(c.open(), 3);
        // A connection that finished its request becomes idle from then on.
        c.end(a, t0 + Duration::from_secs(4));
        let (_, evicted) = admitted(c.admit(t0 + Duration::from_secs(5)));
        assert_eq!(evicted, Some(d));
    }

    #[test]
    fn when_every_connection_is_busy_a_new_one_is_refused() {
        let t0 = Instant::now();
        let mut c = Connections::new(2, 0, T);
        for _ in 0..2 {
            let (id, _) = admitted(c.admit(t0));
            assert!(c.begin(id, false));
        }
        assert_eq!(c.admit(t0), Admission::Refused);
    }

    #[test]
    fn the_reserve_is_kept_for_priority_requests() {
        let t0 = Instant::now();
        let mut c = Connections::new(4, 2, T);
        let ids: Vec<_> = (0..4).map(|_| admitted(c.admit(t0)).0).collect();
        assert!(c.begin(ids[0], false));
        assert!(c.begin(ids[1], false));
        // Two in progress of max 4 with 2 reserved: ordinary requests wait their turn...
        assert!(!c.begin(ids[2], false));
        // ...health and signalling do not.
        assert!(c.begin(ids[2], true));
        assert!(c.begin(ids[3], true));
        c.end(ids[0], t0);
        c.end(ids[2], t0);
        assert!(!c.begin(ids[0], false), "still 2 in progress");
        c.end(ids[3], t0);
        assert!(c.begin(ids[0], false));
    }

    #[test]
    fn idle_deadlines_follow_requests() {
        let t0 = Instant::now();
        let mut c = Connections::new(2, 0, T);
        let (a, _) = admitted(c.admit(t0));
        assert_eq!(c.idle_deadline(a), Some(t0 + T));
        assert!(c.begin(a, true));
        assert_eq!(c.idle_deadline(a), None);
        let later = t0 + Duration::from_secs(30);
        c.end(a, later);
        assert_eq!(c.idle_deadline(a), Some(later + T));
        c.close(a);
        assert_eq!(c.idle_deadline(a), None);
        assert_eq!(c.open(), 0);
    }

    #[test]
    fn a_connection_closed_mid_request_frees_its_requests() {
        let t0 = Instant::now();
        let mut c = Connections::new(1, 0, T);
        let (a, _) = admitted(c.admit(t0));
        assert!(c.begin(a, false));
        c.close(a);
        let (b, _) = admitted(c.admit(t0));
        assert!(c.begin(b, false));
        // The late end of `a`'s request does not free `b`'s place.
        c.end(a, t0);
        assert!(!c.begin(b, false));
    }
}
