//! The delivery policy, encode-once: each track is encoded once for every viewer, so the
//! viewers' links steer the shared encoders and choose what each viewer is sent.
//!
//! * The encoders follow the **best** viewer's bandwidth estimate: of the part media may
//!   use ([`USABLE`]), the context takes what it needs first (up to `[video]
//!   context_kbps`: the context is the last to degrade), the source the rest, within
//!   `[video]` bounds. A single viewer gets what a per-viewer encoder would give it: the
//!   encoders follow its estimate.
//! * A viewer whose estimate stays below what both tracks cost it for [`DOWN_AFTER`] is
//!   sent the **context only** (its claim on the source is released: when nobody is sent
//!   the source, its encoder idles). It is sent both again once its estimate's usable
//!   part has stayed [`UP_MARGIN`] above their cost for [`UP_AFTER`]; meanwhile its BWE
//!   probes for that rate ([`Link::desired_kbps`]) every 2 s. Both tracks cost a viewer
//!   what the encoders send now, except the best viewer, whom the encoders follow: to it
//!   they cost their floors ([`Bounds::context_floor`], [`Bounds::source_floor`]).
//! * A lower frame rate of the same encoding is not a step yet: openh264 as this build
//!   drives it and the Pi 4's `bcm2835-codec` (which has no temporal-layer control) make
//!   every P-frame a reference, so no frame can be left out for one viewer without
//!   breaking its decoding. openh264 can make temporal layers (its C API; the Rust
//!   binding does not expose them); whether Jetson's encoder can is unverified.
//!
//! Everything here is plain state fed with time and estimates; the hub drives it.

use std::time::{Duration, Instant};

use crate::state::LinkLevel;
use crate::video::track::TrackMap;

/// Share of an estimate media may use; the rest is RTP and SRTP headers, retransmissions
/// and the estimate's own error.
pub const USABLE: f64 = 0.85;
/// A viewer is sent the context only after its estimate stayed below the cost of both
/// tracks this long (a single dip is not a trend).
pub const DOWN_AFTER: Duration = Duration::from_secs(1);
/// ... and both again after its estimate stayed this far above their cost ...
pub const UP_MARGIN: f64 = 1.2;
/// ... for this long.
pub const UP_AFTER: Duration = Duration::from_secs(3);
/// A viewer's estimate counts (for the encoders, and for its own level) once it has had
/// this long to move from where it started: the start is a guess.
pub const SETTLE: Duration = Duration::from_secs(2);
/// How often the hub applies the policy.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// The encoders' bounds, from `[video]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The context track's bitrate when the links allow (kbit/s).
    pub context_kbps: u32,
    /// The source track's bitrate when the links allow (kbit/s).
    pub source_kbps: u32,
}

impl Bounds {
    /// The least the context encoder is asked for: a third of its rate still shows the
    /// whole scene.
    pub fn context_floor(&self) -> u32 {
        (self.context_kbps / 3).max(50)
    }

    /// The least the source encoder is asked for: below an eighth of its rate the picture
    /// is no longer worth more than the context.
    pub fn source_floor(&self) -> u32 {
        (self.source_kbps / 8).max(100)
    }

    /// Where a new viewer's estimate starts: enough for both tracks at their configured
    /// rates, so that a viewer on a good link never sees them lowered while its BWE
    /// settles (one on a slow link is found out within a second or two).
    pub fn initial_estimate_kbps(&self) -> u32 {
        (f64::from(self.context_kbps + self.source_kbps) / USABLE).ceil() as u32
    }

    /// Both tracks at their configured rates.
    pub fn configured(&self) -> TrackMap<u32> {
        TrackMap {
            context: self.context_kbps,
            source: self.source_kbps,
        }
    }

    /// The encoders' targets for the best viewer's estimate (`None`: nobody has one yet,
    /// the configured rates).
    pub fn targets(&self, best_estimate_kbps: Option<u32>) -> TrackMap<u32> {
        let Some(best) = best_estimate_kbps else {
            return self.configured();
        };
        let usable = (f64::from(best) * USABLE) as u32;
        let context = usable.clamp(self.context_floor(), self.context_kbps);
        let source = usable
            .saturating_sub(context)
            .clamp(self.source_floor(), self.source_kbps);
        TrackMap { context, source }
    }
}

/// One viewer's link: its estimate and the level it is sent at.
#[derive(Debug)]
pub struct Link {
    estimate_kbps: Option<u32>,
    /// When the policy first saw an estimate.
    first_seen: Option<Instant>,
    level: LinkLevel,
    /// Since when the estimate has argued for a change of level.
    pending_since: Option<Instant>,
}

impl Default for Link {
    fn default() -> Self {
        Link::new()
    }
}

impl Link {
    /// A new viewer: both tracks, no estimate yet.
    pub fn new() -> Link {
        Link {
            estimate_kbps: None,
            first_seen: None,
            level: LinkLevel::Full,
            pending_since: None,
        }
    }

    /// The latest estimate, kbit/s.
    pub fn estimate_kbps(&self) -> Option<u32> {
        self.estimate_kbps
    }

    /// What it is sent now.
    pub fn level(&self) -> LinkLevel {
        self.level
    }

    /// Takes a new estimate from the viewer's BWE.
    pub fn set_estimate(&mut self, kbps: u32) {
        self.estimate_kbps = Some(kbps);
    }

    /// The estimate, once it has had [`SETTLE`] to move from its start (the policy looks
    /// at `now`).
    pub fn settled_kbps(&mut self, now: Instant) -> Option<u32> {
        let first = *self.first_seen.get_or_insert(now);
        self.estimate_kbps
            .filter(|_| now.saturating_duration_since(first) >= SETTLE)
    }

    /// Decides the level at `now`, both tracks costing `full_kbps` (the encoders'
    /// targets); returns the new level when it changed.
    pub fn step(&mut self, now: Instant, full_kbps: u32) -> Option<LinkLevel> {
        let estimate = f64::from(self.settled_kbps(now)?);
        let full = f64::from(full_kbps);
        // Down when the estimate falls below the media itself (a link carrying what it
        // is sent estimates a little above it: it cannot know more without probing); up
        // when the usable part of it clears the media with a margin.
        let (argues, after, next) = match self.level {
            LinkLevel::Full => (estimate < full, DOWN_AFTER, LinkLevel::ContextOnly),
            LinkLevel::ContextOnly => (
                estimate * USABLE >= full * UP_MARGIN,
                UP_AFTER,
                LinkLevel::Full,
            ),
        };
        if !argues {
            self.pending_since = None;
            return None;
        }
        let since = *self.pending_since.get_or_insert(now);
        if now.saturating_duration_since(since) < after {
            return None;
        }
        self.pending_since = None;
        self.level = next;
        Some(next)
    }

    /// The rate its BWE should look for: what both tracks need, with the margin to step
    /// back up (kbit/s).
    pub fn desired_kbps(&self, full_kbps: u32) -> u32 {
        (f64::from(full_kbps) * UP_MARGIN / USABLE).ceil() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        context_kbps: 300,
        source_kbps: 2500,
    };

    #[test]
    fn encoders_follow_the_best_estimate_context_first() {
        assert_eq!(BOUNDS.targets(None), BOUNDS.configured());
        assert_eq!(
            BOUNDS.targets(Some(BOUNDS.initial_estimate_kbps())),
            BOUNDS.configured(),
            "a new viewer starts with both tracks at their rates"
        );
        // Plenty: both at their bounds.
        assert_eq!(BOUNDS.targets(Some(10_000)), BOUNDS.configured());
        // 1 Mbit/s: 850 usable, the context takes its 300, the source the rest.
        let t = BOUNDS.targets(Some(1000));
        assert_eq!((t.context, t.source), (300, 550));
        // A link that cannot carry both: the context keeps what there is (down to its
        // floor), the source sits at its floor.
        let t = BOUNDS.targets(Some(300));
        assert_eq!((t.context, t.source), (255, 312));
        let t = BOUNDS.targets(Some(50));
        assert_eq!((t.context, t.source), (100, 312));
    }

    #[test]
    fn a_single_viewer_is_never_stepped_down_while_the_encoders_fit_its_estimate() {
        let mut link = Link::new();
        let start = Instant::now();
        link.set_estimate(3000);
        link.settled_kbps(start);
        for (i, kbps) in [3000, 1500, 900, 700, 1200].into_iter().enumerate() {
            link.set_estimate(kbps);
            let full = BOUNDS.targets(Some(kbps));
            let now = start + Duration::from_secs(i as u64 * 5);
            assert_eq!(link.step(now, full.context + full.source), None);
            assert_eq!(
                link.step(now + Duration::from_secs(4), full.context + full.source),
                None
            );
        }
        assert_eq!(link.level(), LinkLevel::Full);
    }

    #[test]
    fn a_slow_link_gets_the_context_only_and_steps_back_with_hysteresis() {
        let mut link = Link::new();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let full = 2800; // another viewer keeps the encoders at their bounds
        link.set_estimate(400);
        assert_eq!(link.settled_kbps(at(0)), None, "its start is a guess");
        let start = start + SETTLE;
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(link.step(at(0), full), None, "not on the first look");
        assert_eq!(link.step(at(900), full), None);
        assert_eq!(link.step(at(1000), full), Some(LinkLevel::ContextOnly));
        // Recovering, but not far enough above the cost: stays.
        link.set_estimate(3300); // 2805 usable, < 2800 × 1.2
        assert_eq!(link.step(at(2000), full), None);
        assert_eq!(link.step(at(9000), full), None);
        // Far enough, but only for a moment: stays.
        link.set_estimate(4000);
        assert_eq!(link.step(at(10_000), full), None);
        link.set_estimate(1000);
        assert_eq!(link.step(at(11_000), full), None);
        link.set_estimate(4000);
        assert_eq!(link.step(at(12_000), full), None);
        assert_eq!(link.step(at(14_900), full), None);
        assert_eq!(link.step(at(15_000), full), Some(LinkLevel::Full));
        assert!(link.desired_kbps(full) >= 3952, "probes for the way back");
    }

    #[test]
    fn without_an_estimate_nothing_changes() {
        let mut link = Link::new();
        assert_eq!(link.step(Instant::now(), 2800), None);
        assert_eq!(link.level(), LinkLevel::Full);
        assert_eq!(link.estimate_kbps(), None);
    }
}
