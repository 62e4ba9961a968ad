//! The delivery policy, encode-once: each track is encoded once for every viewer, so the
//! viewers' links steer the shared encoders and choose what each viewer is sent.
//!
//! * Each viewer is sent one of four [levels](LinkLevel), most first: both tracks; the
//!   source at half its frame rate; the context only; the context at half its frame rate.
//!   The context is the last to degrade. A half rate is every other frame of the same
//!   encoding: the frames of temporal layer 1, which no other frame references (see
//!   `focusd_board::encode`), are left out. A track whose encoder makes one layer (the
//!   default `[video] temporal_layers = 1`; the Pi 4's, x264 and Jetson's always) has no
//!   half rate: that level is skipped ([`Ladder`]).
//! * What a level costs a viewer follows from what the encoders send now and the share
//!   of each track's bytes in its base layer, measured from the frames themselves
//!   ([`LayerMeter`]; with openh264 about 60%: the base layer's frames are larger).
//! * The encoders follow the **best** viewer's bandwidth estimate: the level it can have
//!   with the encoders at their floors ([`Bounds::context_floor`],
//!   [`Bounds::source_floor`]), and at that level the rates that fill the part of its
//!   estimate media may use ([`USABLE`]), the context first (up to `[video]
//!   context_kbps`, leaving the source its floor when it is sent), the source the rest,
//!   within `[video]` bounds ([`Bounds::targets`]). A single viewer gets what a per-viewer encoder would give it:
//!   the encoders follow its estimate; only below their floors does it step.
//! * A viewer whose estimate stays below what its level costs for [`DOWN_AFTER`] steps down
//!   to the best level its usable estimate covers (the lowest, if none); it steps up one
//!   level once its usable estimate has stayed [`UP_MARGIN`] above that level's cost for
//!   [`UP_AFTER`]; meanwhile its BWE probes for that rate ([`Link::desired_kbps`]).
//!   Without the source a viewer's claim on it is released (when nobody is sent the
//!   source, its encoder idles); back to the source, it waits for a keyframe.
//!
//! Everything here is plain state fed with time and estimates; the hub drives it.

use std::time::{Duration, Instant};

use crate::state::LinkLevel;
use crate::track::{Track, TrackMap};

/// Share of an estimate media may use; the rest is RTP and SRTP headers, retransmissions
/// and the estimate's own error.
pub const USABLE: f64 = 0.85;
/// A viewer steps down after its estimate stayed below the cost of its level this long (a
/// single dip is not a trend).
pub const DOWN_AFTER: Duration = Duration::from_secs(1);
/// ... and up a level after its estimate stayed this far above that level's cost ...
pub const UP_MARGIN: f64 = 1.2;
/// ... for this long.
pub const UP_AFTER: Duration = Duration::from_secs(3);
/// A viewer's estimate counts (for the encoders, and for its own level) once it has had
/// this long to move from where it started: the start is a guess. One that has fallen
/// below [`EARLY_DROP`] of its start counts at once, and steps its level down without
/// [`DOWN_AFTER`]: a link that slow is evidence, and every moment it is sent more than it
/// carries piles up in the pacer's queue.
pub const SETTLE: Duration = Duration::from_secs(2);
/// See [`SETTLE`].
pub const EARLY_DROP: f64 = 0.5;
/// How often the hub applies the policy.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// Whether a frame of `track` in temporal layer `layer` is sent to a viewer at `level`.
pub fn sends(level: LinkLevel, track: Track, layer: u8) -> bool {
    let half = match track {
        Track::Source if !level.has_source() => return false,
        Track::Source => level == LinkLevel::SourceHalfRate,
        Track::Context => level == LinkLevel::ContextHalfRate,
    };
    !half || layer == 0
}

/// How one track's bytes split between its temporal layers, from the frames sent: a
/// decaying sum over about the last [`LayerMeter::WINDOW`] frames.
#[derive(Clone, Copy, Debug, Default)]
pub struct LayerMeter {
    /// Bytes of layer-0 frames, decayed.
    base: f64,
    /// Bytes of every frame, decayed.
    all: f64,
    /// Frames since the last one of layer 1 (`None`: none yet).
    since_upper: Option<u32>,
}

impl LayerMeter {
    /// Frames the sums span (2 s at 30 fps): a keyframe's weight fades within it.
    pub const WINDOW: u32 = 60;

    /// Counts a frame of `bytes` in temporal layer `layer`.
    pub fn record(&mut self, layer: u8, bytes: usize) {
        let keep = 1.0 - 1.0 / f64::from(Self::WINDOW);
        self.all = self.all * keep + bytes as f64;
        self.base *= keep;
        if layer == 0 {
            self.base += bytes as f64;
            self.since_upper = self.since_upper.map(|n| n.saturating_add(1));
        } else {
            self.since_upper = Some(0);
        }
    }

    /// The share of the bytes in layer 0, or `None` when the track has had no frame of
    /// layer 1 in the last [`Self::WINDOW`] frames (its encoder makes one layer).
    pub fn base_share(&self) -> Option<f64> {
        let layered = self.since_upper.is_some_and(|n| n < Self::WINDOW);
        (layered && self.all > 0.0).then(|| (self.base / self.all).clamp(0.0, 1.0))
    }
}

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

    /// Both encoders at their floors.
    pub fn floors(&self) -> TrackMap<u32> {
        TrackMap {
            context: self.context_floor(),
            source: self.source_floor(),
        }
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

    /// The encoders' targets for the best viewer: its estimate and the level it is sent
    /// (`None`: nobody has an estimate yet, the configured rates). The context takes what
    /// it needs first, leaving the source its floor when the source is sent; the source
    /// the rest. A track sent at half rate costs its base layer's share of its rate.
    pub fn targets(
        &self,
        best: Option<(u32, LinkLevel)>,
        shares: TrackMap<Option<f64>>,
    ) -> TrackMap<u32> {
        let Some((estimate, level)) = best else {
            return self.configured();
        };
        let usable = f64::from(estimate) * USABLE;
        let share = |t: Track, half: bool| {
            if half {
                shares[t].unwrap_or(1.0).max(0.1)
            } else {
                1.0
            }
        };
        let (context_share, source_share) = (
            share(Track::Context, level == LinkLevel::ContextHalfRate),
            share(Track::Source, level == LinkLevel::SourceHalfRate),
        );
        let source_reserve = if level.has_source() {
            f64::from(self.source_floor()) * source_share
        } else {
            0.0
        };
        let context = ((usable - source_reserve).max(0.0) / context_share) as u32;
        let context = context.clamp(self.context_floor(), self.context_kbps);
        let left = (usable - f64::from(context) * context_share).max(0.0);
        let source = ((left / source_share) as u32).clamp(self.source_floor(), self.source_kbps);
        TrackMap { context, source }
    }
}

/// What each level costs a viewer (kbit/s) with the encoders at some rates, and which
/// levels there are: a track in one temporal layer has no half rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ladder {
    /// Indexed like [`LinkLevel::ALL`]; `None` for a level there is not.
    costs: [Option<u32>; 4],
}

impl Ladder {
    /// The levels with the encoders at `rates` (kbit/s), each track's base layer carrying
    /// `shares` of its bytes (`None`: one layer).
    pub fn new(rates: TrackMap<u32>, shares: TrackMap<Option<f64>>) -> Ladder {
        let half = |t: Track| shares[t].map(|s| (f64::from(rates[t]) * s).round() as u32);
        let costs = LinkLevel::ALL.map(|level| match level {
            LinkLevel::Full => Some(rates.context + rates.source),
            LinkLevel::SourceHalfRate => half(Track::Source).map(|s| rates.context + s),
            LinkLevel::ContextOnly => Some(rates.context),
            LinkLevel::ContextHalfRate => half(Track::Context),
        });
        Ladder { costs }
    }

    /// What `level` costs, or `None` when there is no such level.
    pub fn cost(&self, level: LinkLevel) -> Option<u32> {
        self.costs[level as usize]
    }

    /// The cost of `level`, or of the next level above it there is (a viewer on a level
    /// that went away, its encoder reopened with one layer, is sent that track whole).
    fn cost_at(&self, level: LinkLevel) -> u32 {
        LinkLevel::ALL[..=level as usize]
            .iter()
            .rev()
            .find_map(|l| self.cost(*l))
            .unwrap_or(0)
    }

    /// The next level above `level` there is.
    fn above(&self, level: LinkLevel) -> Option<(LinkLevel, u32)> {
        LinkLevel::ALL[..level as usize]
            .iter()
            .rev()
            .find_map(|l| Some((*l, self.cost(*l)?)))
    }

    /// The best level below `level` that costs at most `kbps`, else the lowest there is.
    fn below(&self, level: LinkLevel, kbps: f64) -> Option<LinkLevel> {
        let lower = || {
            LinkLevel::ALL[level as usize + 1..]
                .iter()
                .filter_map(|l| Some((*l, self.cost(*l)?)))
        };
        lower()
            .find(|(_, cost)| f64::from(*cost) <= kbps)
            .or_else(|| lower().next_back())
            .map(|(l, _)| l)
    }
}

/// One viewer's link: its estimate and the level it is sent at.
#[derive(Debug)]
pub struct Link {
    /// Where its BWE started (kbit/s).
    initial_kbps: u32,
    estimate_kbps: Option<u32>,
    /// When the policy first saw an estimate.
    first_seen: Option<Instant>,
    level: LinkLevel,
    /// Since when the estimate has argued for a change of level, and whether down.
    pending: Option<(Instant, bool)>,
}

impl Link {
    /// A new viewer whose BWE starts at `initial_kbps`: both tracks, no estimate yet.
    pub fn new(initial_kbps: u32) -> Link {
        Link {
            initial_kbps,
            estimate_kbps: None,
            first_seen: None,
            level: LinkLevel::Full,
            pending: None,
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

    /// The estimate, once it has had [`SETTLE`] to move from its start or has fallen
    /// far below it (the policy looks at `now`).
    pub fn settled_kbps(&mut self, now: Instant) -> Option<u32> {
        let estimate = self.estimate_kbps?;
        (!self.is_early(now) || self.dropped_early(estimate)).then_some(estimate)
    }

    /// Whether its estimate is still within [`SETTLE`] of the first the policy saw.
    fn is_early(&mut self, now: Instant) -> bool {
        let first = *self.first_seen.get_or_insert(now);
        now.saturating_duration_since(first) < SETTLE
    }

    /// Whether `estimate` is below [`EARLY_DROP`] of where it started.
    fn dropped_early(&self, estimate: u32) -> bool {
        f64::from(estimate) < f64::from(self.initial_kbps) * EARLY_DROP
    }

    /// Decides the level at `now`, the levels costing what `ladder` says; returns the new
    /// level when it changed.
    pub fn step(&mut self, now: Instant, ladder: &Ladder) -> Option<LinkLevel> {
        let estimate = f64::from(self.settled_kbps(now)?);
        let usable = estimate * USABLE;
        // Down when the estimate falls below the media itself (a link carrying what it
        // is sent estimates a little above it: it cannot know more without probing), to
        // what its usable part carries; up a level when the usable part clears that
        // level's cost with a margin.
        let down = estimate < f64::from(ladder.cost_at(self.level));
        let next = if down {
            ladder.below(self.level, usable)
        } else {
            ladder
                .above(self.level)
                .filter(|(_, cost)| usable >= f64::from(*cost) * UP_MARGIN)
                .map(|(level, _)| level)
        };
        let Some(next) = next else {
            self.pending = None;
            return None;
        };
        let since = match self.pending {
            Some((since, was_down)) if was_down == down => since,
            _ => self.pending.insert((now, down)).0,
        };
        let after = match down {
            true if self.is_early(now) => Duration::ZERO,
            true => DOWN_AFTER,
            false => UP_AFTER,
        };
        if now.saturating_duration_since(since) < after {
            return None;
        }
        self.pending = None;
        self.level = next;
        Some(next)
    }

    /// The rate its BWE should look for (kbit/s): what the level above costs, with the
    /// margin to step up to it; at the top, `top_kbps`.
    pub fn desired_kbps(&self, ladder: &Ladder, top_kbps: u32) -> u32 {
        match ladder.above(self.level) {
            Some((_, cost)) => (f64::from(cost) * UP_MARGIN / USABLE).ceil() as u32,
            None => top_kbps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        context_kbps: 300,
        source_kbps: 2500,
    };
    /// Both tracks in two temporal layers, 60% of the bytes in the base.
    const LAYERED: TrackMap<Option<f64>> = TrackMap {
        context: Some(0.6),
        source: Some(0.6),
    };
    const ONE_LAYER: TrackMap<Option<f64>> = TrackMap {
        context: None,
        source: None,
    };
    /// Where a viewer's BWE starts.
    const INITIAL: u32 = 3295;

    #[test]
    fn encoders_follow_the_best_estimate_context_first() {
        let full = |kbps| BOUNDS.targets(Some((kbps, LinkLevel::Full)), LAYERED);
        assert_eq!(BOUNDS.targets(None, LAYERED), BOUNDS.configured());
        assert_eq!(
            full(BOUNDS.initial_estimate_kbps()),
            BOUNDS.configured(),
            "a new viewer starts with both tracks at their rates"
        );
        // Plenty: both at their bounds.
        assert_eq!(full(10_000), BOUNDS.configured());
        // 1 Mbit/s: 850 usable, the context takes its 300, the source the rest.
        let t = full(1000);
        assert_eq!((t.context, t.source), (300, 550));
        // 600: the context leaves the source its floor.
        let t = full(600);
        assert_eq!((t.context, t.source), (198, 312));
        // A link that cannot carry both at their floors: both there.
        let t = full(300);
        assert_eq!((t.context, t.source), (100, 312));
    }

    #[test]
    fn at_a_lower_level_the_targets_fill_what_that_level_costs() {
        let at = |kbps, level| BOUNDS.targets(Some((kbps, level)), LAYERED);
        // The source at half rate: its 60% counts.
        let t = at(600, LinkLevel::SourceHalfRate);
        assert_eq!((t.context, t.source), (300, 350));
        let cost = Ladder::new(t, LAYERED)
            .cost(LinkLevel::SourceHalfRate)
            .unwrap();
        assert!(cost <= 510, "{cost} within 600 × {USABLE}");
        // The context only: all of it for the context.
        let t = at(300, LinkLevel::ContextOnly);
        assert_eq!(t.context, 255);
        // The context at half rate: its rate is what its base layer may cost, over 60%.
        let t = at(150, LinkLevel::ContextHalfRate);
        assert_eq!(t.context, 212);
        // With one layer there is no half rate to count on: the track costs it whole.
        let t = BOUNDS.targets(Some((150, LinkLevel::ContextHalfRate)), ONE_LAYER);
        assert_eq!(t.context, 127);
    }

    #[test]
    fn the_ladder_has_half_rates_only_for_layered_tracks() {
        let ladder = Ladder::new(BOUNDS.configured(), LAYERED);
        let costs = LinkLevel::ALL.map(|l| ladder.cost(l));
        assert_eq!(costs, [Some(2800), Some(1800), Some(300), Some(180)]);
        let ladder = Ladder::new(BOUNDS.configured(), ONE_LAYER);
        let costs = LinkLevel::ALL.map(|l| ladder.cost(l));
        assert_eq!(costs, [Some(2800), None, Some(300), None]);
        let source_only = TrackMap {
            context: None,
            source: Some(0.5),
        };
        let ladder = Ladder::new(BOUNDS.configured(), source_only);
        let costs = LinkLevel::ALL.map(|l| ladder.cost(l));
        assert_eq!(costs, [Some(2800), Some(1550), Some(300), None]);
    }

    #[test]
    fn what_each_level_sends() {
        use LinkLevel::*;
        let sent = |level| {
            [
                (Track::Context, 0),
                (Track::Context, 1),
                (Track::Source, 0),
                (Track::Source, 1),
            ]
            .map(|(t, layer)| sends(level, t, layer))
        };
        assert_eq!(sent(Full), [true, true, true, true]);
        assert_eq!(sent(SourceHalfRate), [true, true, true, false]);
        assert_eq!(sent(ContextOnly), [true, true, false, false]);
        assert_eq!(sent(ContextHalfRate), [true, false, false, false]);
    }

    #[test]
    fn the_layer_meter_measures_the_base_share_and_notices_one_layer() {
        let mut meter = LayerMeter::default();
        assert_eq!(meter.base_share(), None);
        for i in 0..200 {
            let layer = (i % 2) as u8;
            meter.record(layer, if layer == 0 { 6000 } else { 4000 });
        }
        let share = meter.base_share().unwrap();
        assert!((share - 0.6).abs() < 0.01, "{share}");
        // The encoder reopened with one layer: after a window of layer-0 frames, none.
        for _ in 0..LayerMeter::WINDOW - 1 {
            meter.record(0, 5000);
        }
        assert!(meter.base_share().is_some());
        meter.record(0, 5000);
        assert_eq!(meter.base_share(), None);
    }

    /// A link that has settled at `start`.
    fn settled_link(start: Instant, kbps: u32) -> Link {
        let mut link = Link::new(INITIAL);
        link.set_estimate(kbps);
        link.settled_kbps(start - SETTLE);
        link
    }

    #[test]
    fn a_single_viewer_is_never_stepped_down_while_the_encoders_fit_its_estimate() {
        let start = Instant::now();
        let mut link = settled_link(start, 3000);
        let followed = Ladder::new(BOUNDS.floors(), LAYERED);
        for (i, kbps) in [3000, 1500, 900, 700, 450, 1200].into_iter().enumerate() {
            link.set_estimate(kbps);
            let now = start + Duration::from_secs(i as u64 * 5);
            assert_eq!(link.step(now, &followed), None);
            assert_eq!(link.step(now + Duration::from_secs(4), &followed), None);
        }
        assert_eq!(link.level(), LinkLevel::Full);
    }

    #[test]
    fn a_slow_link_steps_down_the_ladder_and_back_up_with_hysteresis() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // Another viewer keeps the encoders at their bounds.
        let ladder = Ladder::new(BOUNDS.configured(), LAYERED);
        let mut link = Link::new(INITIAL);
        link.set_estimate(2000);
        assert_eq!(link.settled_kbps(at(0)), None, "its start is a guess");
        let mut link = settled_link(start, 400);
        assert_eq!(link.step(at(0), &ladder), None, "not on the first look");
        assert_eq!(link.step(at(900), &ladder), None);
        // 340 usable: past the source at half rate (1800) to the context (300).
        assert_eq!(link.step(at(1000), &ladder), Some(LinkLevel::ContextOnly));
        // Worse: the context at half rate (180 of 212 usable).
        link.set_estimate(250);
        assert_eq!(link.step(at(2000), &ladder), None);
        assert_eq!(
            link.step(at(3000), &ladder),
            Some(LinkLevel::ContextHalfRate)
        );
        assert_eq!(link.desired_kbps(&ladder, 0), 424, "probes for the context");
        // Up only with the margin, and only after it held.
        link.set_estimate(420); // 357 usable < 300 × 1.2
        assert_eq!(link.step(at(4000), &ladder), None);
        assert_eq!(link.step(at(9000), &ladder), None);
        link.set_estimate(430);
        assert_eq!(link.step(at(10_000), &ladder), None);
        assert_eq!(link.step(at(12_900), &ladder), None);
        assert_eq!(link.step(at(13_000), &ladder), Some(LinkLevel::ContextOnly));
        // One level at a time, each after its own wait.
        link.set_estimate(4000);
        assert_eq!(link.step(at(14_000), &ladder), None);
        assert_eq!(
            link.step(at(17_000), &ladder),
            Some(LinkLevel::SourceHalfRate)
        );
        assert_eq!(link.step(at(18_000), &ladder), None);
        assert_eq!(link.step(at(21_000), &ladder), Some(LinkLevel::Full));
        assert_eq!(link.desired_kbps(&ladder, 3294), 3294, "at the top");
    }

    #[test]
    fn a_link_far_slower_than_hoped_steps_down_at_once() {
        let start = Instant::now();
        let ladder = Ladder::new(BOUNDS.configured(), LAYERED);
        let mut link = Link::new(INITIAL);
        link.set_estimate(INITIAL / 2 + 10);
        assert_eq!(
            link.step(start, &ladder),
            None,
            "half of the start: a guess"
        );
        link.set_estimate(400);
        let soon = start + Duration::from_millis(300);
        assert_eq!(link.settled_kbps(soon), Some(400), "evidence");
        assert_eq!(link.step(soon, &ladder), Some(LinkLevel::ContextOnly));
        // Settled, a step down waits again.
        link.set_estimate(250);
        let later = start + SETTLE;
        assert_eq!(link.step(later, &ladder), None);
        assert_eq!(
            link.step(later + DOWN_AFTER, &ladder),
            Some(LinkLevel::ContextHalfRate)
        );
        // And up, never at once.
        let mut link = Link::new(INITIAL);
        link.set_estimate(400);
        assert_eq!(link.step(start, &ladder), Some(LinkLevel::ContextOnly));
        link.set_estimate(10_000);
        assert_eq!(link.step(soon, &ladder), None);
    }

    #[test]
    fn a_change_of_direction_restarts_the_wait() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let ladder = Ladder::new(BOUNDS.configured(), LAYERED);
        let mut link = settled_link(start, 1000);
        assert_eq!(link.step(at(0), &ladder), None);
        assert_eq!(link.step(at(1000), &ladder), Some(LinkLevel::ContextOnly));
        link.set_estimate(3000); // argues up to the source at half rate ...
        assert_eq!(link.step(at(2000), &ladder), None);
        link.set_estimate(200); // ... then down ...
        assert_eq!(link.step(at(4000), &ladder), None);
        assert_eq!(
            link.step(at(5000), &ladder),
            Some(LinkLevel::ContextHalfRate),
            "... each after its own wait"
        );
    }

    #[test]
    fn without_temporal_layers_the_half_rates_are_skipped() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let ladder = Ladder::new(BOUNDS.configured(), ONE_LAYER);
        let mut link = settled_link(start, 250);
        assert_eq!(link.step(at(0), &ladder), None);
        assert_eq!(link.step(at(1000), &ladder), Some(LinkLevel::ContextOnly));
        assert_eq!(link.step(at(5000), &ladder), None, "nothing lower");
        link.set_estimate(4000);
        assert_eq!(link.step(at(6000), &ladder), None);
        assert_eq!(link.step(at(9000), &ladder), Some(LinkLevel::Full));
    }

    #[test]
    fn without_an_estimate_nothing_changes() {
        let mut link = Link::new(INITIAL);
        let ladder = Ladder::new(BOUNDS.configured(), LAYERED);
        assert_eq!(link.step(Instant::now(), &ladder), None);
        assert_eq!(link.level(), LinkLevel::Full);
        assert_eq!(link.estimate_kbps(), None);
    }
}
