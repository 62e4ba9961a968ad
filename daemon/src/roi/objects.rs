//! The identity tracker: the objects a detector sees, each with an id that lasts while it is
//! in view, a category, a score, its raw box, a velocity, a stationary flag and a
//! lifecycle ([`TrackState`]).
//!
//! Sans-IO: it is fed detections with the time they were taken ([`ObjectTracker::observe`])
//! and asked where its objects are at a time ([`ObjectTracker::predict`]); it never reads
//! a clock, spawns or blocks, so every case (a missed detection, two people crossing, a
//! short occlusion) is a unit test with made-up times.
//!
//! Each run, every track is predicted to the run's time at its velocity, and detections
//! are matched to predictions greedily by overlap, best first, within a category: a
//! person crossing another keeps its id because the predictions have moved apart along
//! their paths by the time the boxes overlap. A track that was looked for (its predicted
//! box inside a region the detector looked at) and not found is *missed*; one outside
//! every looked-at region is left as it was. A new track is [`TrackState::Tentative`]
//! until seen [`TrackerConfig::confirm_hits`] times, and dropped if missed before; a
//! confirmed one missed for [`TrackerConfig::lost_after`] is [`TrackState::Lost`], keeps
//! its id and moves on at its velocity so it can be found again after an occlusion, and
//! is forgotten after [`TrackerConfig::forget_after`].

use std::time::{Duration, Instant};

use serde::Serialize;

use super::category::Category;

/// A box in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Rect {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl Rect {
    pub fn width(&self) -> f64 {
        (self.x1 - self.x0).max(0.0)
    }

    pub fn height(&self) -> f64 {
        (self.y1 - self.y0).max(0.0)
    }

    pub fn area(&self) -> f64 {
        self.width() * self.height()
    }

    pub fn centre(&self) -> (f64, f64) {
        ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)
    }

    /// Intersection over union.
    pub fn iou(&self, o: &Rect) -> f64 {
        let inter = self.intersection(o);
        let union = self.area() + o.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    pub fn intersection(&self, o: &Rect) -> f64 {
        let w = self.x1.min(o.x1) - self.x0.max(o.x0);
        let h = self.y1.min(o.y1) - self.y0.max(o.y0);
        w.max(0.0) * h.max(0.0)
    }

    /// This box moved by `(dx, dy)`.
    pub fn shifted(&self, dx: f64, dy: f64) -> Rect {
        Rect {
            x0: self.x0 + dx,
            y0: self.y0 + dy,
            x1: self.x1 + dx,
            y1: self.y1 + dy,
        }
    }

    /// This box grown by `dx` left and right and `dy` above and below.
    pub fn grown(&self, dx: f64, dy: f64) -> Rect {
        Rect {
            x0: self.x0 - dx,
            y0: self.y0 - dy,
            x1: self.x1 + dx,
            y1: self.y1 + dy,
        }
    }
}

/// One object a detector reported.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub rect: Rect,
    /// Confidence, 0–1.
    pub score: f32,
    pub category: Category,
    /// The model's own class name (e.g. `Car` in the vehicle category).
    pub class: String,
}

/// Where a track is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TrackState {
    /// Seen fewer than [`TrackerConfig::confirm_hits`] times: maybe a false detection.
    Tentative,
    /// Seen enough, and recently.
    Confirmed,
    /// Confirmed once, not seen for [`TrackerConfig::lost_after`]: predicted on, kept for
    /// re-identification until [`TrackerConfig::forget_after`].
    Lost,
}

/// An object followed over time.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectTrack {
    /// Unique for the tracker's life, never reused.
    pub id: u64,
    pub state: TrackState,
    pub category: Category,
    /// The model's class of the last detection.
    pub class: String,
    /// Score of the last detection, 0–1.
    pub score: f32,
    /// The last detection's box, as the detector gave it.
    pub rect: Rect,
    /// When `rect` was seen.
    pub seen_at: Instant,
    /// When the track began.
    pub born_at: Instant,
    /// Centre velocity, pixels per second (smoothed).
    pub velocity: (f64, f64),
    /// Whether it has hardly moved for [`TrackerConfig::stationary_after`].
    pub stationary: bool,
    /// Detections matched to it.
    pub hits: u32,
    /// Since when it has moved less than the stationary speed (`None`: it is moving).
    still_since: Option<Instant>,
}

impl ObjectTrack {
    /// Where the track is predicted at `at`: its last box moved on at its velocity.
    pub fn predicted(&self, at: Instant, config: &TrackerConfig) -> Rect {
        let dt = at.saturating_duration_since(self.seen_at).as_secs_f64();
        // Beyond this a prediction is a guess: hold it there.
        let dt = dt.min(config.forget_after.as_secs_f64());
        let (vx, vy) = self.velocity;
        self.rect.shifted(vx * dt, vy * dt)
    }

    /// Speed in box heights per second.
    fn relative_speed(&self) -> f64 {
        let (vx, vy) = self.velocity;
        vx.hypot(vy) / self.rect.height().max(1.0)
    }
}

/// The tracker's settings. The defaults suit a detector run a few times a second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackerConfig {
    /// Detections a new track needs to be confirmed.
    pub confirm_hits: u32,
    /// A confirmed track not seen this long is lost.
    pub lost_after: Duration,
    /// A lost track is forgotten this long after it was last seen.
    pub forget_after: Duration,
    /// Overlap (IoU) a detection needs with a track's prediction to continue it.
    pub match_iou: f64,
    /// Weight of the newest measurement in the smoothed velocity, 0–1.
    pub velocity_gain: f64,
    /// Slower than this (box heights per second) is still...
    pub stationary_speed: f64,
    /// ... and still this long is stationary.
    pub stationary_after: Duration,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            confirm_hits: 2,
            lost_after: Duration::from_millis(1500),
            forget_after: Duration::from_secs(4),
            match_iou: 0.1,
            velocity_gain: 0.5,
            stationary_speed: 0.1,
            stationary_after: Duration::from_secs(3),
        }
    }
}

/// The identity tracker (see the module docs).
#[derive(Debug)]
pub struct ObjectTracker {
    config: TrackerConfig,
    tracks: Vec<ObjectTrack>,
    next_id: u64,
}

impl ObjectTracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// Every track, tentative and lost ones included, oldest first.
    pub fn tracks(&self) -> &[ObjectTrack] {
        &self.tracks
    }

    /// The tracks worth showing: confirmed and lost ones (a tentative one may be noise).
    pub fn visible(&self) -> impl Iterator<Item = &ObjectTrack> {
        self.tracks
            .iter()
            .filter(|t| t.state != TrackState::Tentative)
    }

    /// Feeds one detector run: what it found at `at`, having looked at `looked` (frame
    /// regions; a track predicted outside all of them is not missed).
    pub fn observe(&mut self, at: Instant, found: &[Detection], looked: &[Rect]) {
        let config = self.config;
        let predictions: Vec<Rect> = self
            .tracks
            .iter()
            .map(|t| t.predicted(at, &config))
            .collect();
        // Candidate pairs by overlap with the prediction, best first.
        let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
        for (t, (track, predicted)) in self.tracks.iter().zip(&predictions).enumerate() {
            for (d, det) in found.iter().enumerate() {
                if det.category != track.category {
                    continue;
                }
                let iou = predicted.iou(&det.rect);
                if iou >= config.match_iou {
                    pairs.push((iou, t, d));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_done = vec![false; self.tracks.len()];
        let mut det_done = vec![false; found.len()];
        for (_, t, d) in pairs {
            if track_done[t] || det_done[d] {
                continue;
            }
            track_done[t] = true;
            det_done[d] = true;
            Self::update(&mut self.tracks[t], &found[d], at, &config);
        }
        // The unmatched tracks: missed if they were looked for.
        let mut keep = Vec::with_capacity(self.tracks.len());
        for (t, track) in self.tracks.drain(..).enumerate() {
            if track_done[t] {
                keep.push(track);
                continue;
            }
            let predicted = predictions[t];
            let looked_for = looked
                .iter()
                .any(|r| r.intersection(&predicted) >= 0.5 * predicted.area());
            let unseen = at.saturating_duration_since(track.seen_at);
            let keep_it = match track.state {
                TrackState::Tentative => !looked_for,
                TrackState::Confirmed | TrackState::Lost => unseen < config.forget_after,
            };
            if keep_it {
                let mut track = track;
                if track.state == TrackState::Confirmed && unseen >= config.lost_after {
                    track.state = TrackState::Lost;
                }
                keep.push(track);
            }
        }
        self.tracks = keep;
        for (d, det) in found.iter().enumerate() {
            if !det_done[d] {
                self.begin(det, at);
            }
        }
    }

    /// Lets time pass with no detector run (marks tracks lost and forgets old ones).
    pub fn tick(&mut self, now: Instant) {
        let config = self.config;
        self.tracks.retain_mut(|t| {
            let unseen = now.saturating_duration_since(t.seen_at);
            if t.state == TrackState::Confirmed && unseen >= config.lost_after {
                t.state = TrackState::Lost;
            }
            match t.state {
                TrackState::Tentative => unseen < config.lost_after,
                _ => unseen < config.forget_after,
            }
        });
    }

    /// The visible tracks' boxes predicted at `at`, with their tracks.
    pub fn predict(&self, at: Instant) -> impl Iterator<Item = (&ObjectTrack, Rect)> {
        self.visible()
            .map(move |t| (t, t.predicted(at, &self.config)))
    }

    fn begin(&mut self, det: &Detection, at: Instant) {
        let id = self.next_id;
        self.next_id += 1;
        let state = if self.config.confirm_hits <= 1 {
            TrackState::Confirmed
        } else {
            TrackState::Tentative
        };
        self.tracks.push(ObjectTrack {
            id,
            state,
            category: det.category,
            class: det.class.clone(),
            score: det.score,
            rect: det.rect,
            seen_at: at,
            born_at: at,
            velocity: (0.0, 0.0),
            stationary: false,
            hits: 1,
            still_since: Some(at),
        });
    }

    fn update(track: &mut ObjectTrack, det: &Detection, at: Instant, config: &TrackerConfig) {
        let dt = at.saturating_duration_since(track.seen_at).as_secs_f64();
        if dt > 0.0 {
            let (c0, c1) = (track.rect.centre(), det.rect.centre());
            let measured = ((c1.0 - c0.0) / dt, (c1.1 - c0.1) / dt);
            // The first measurement is taken whole; later ones smoothed.
            let g = if track.hits == 1 {
                1.0
            } else {
                config.velocity_gain
            };
            track.velocity = (
                g * measured.0 + (1.0 - g) * track.velocity.0,
                g * measured.1 + (1.0 - g) * track.velocity.1,
            );
        }
        track.rect = det.rect;
        track.score = det.score;
        track.class = det.class.clone();
        track.seen_at = at;
        track.hits += 1;
        if track.state == TrackState::Lost || track.hits >= config.confirm_hits {
            track.state = TrackState::Confirmed;
        }
        if track.relative_speed() < config.stationary_speed {
            let since = *track.still_since.get_or_insert(at);
            track.stationary = at.saturating_duration_since(since) >= config.stationary_after;
        } else {
            track.still_since = None;
            track.stationary = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(x: f64, y: f64) -> Detection {
        Detection {
            rect: Rect {
                x0: x,
                y0: y,
                x1: x + 30.0,
                y1: y + 80.0,
            },
            score: 0.8,
            category: Category::Person,
            class: "Person".into(),
        }
    }

    fn whole() -> Vec<Rect> {
        vec![Rect {
            x0: -1000.0,
            y0: -1000.0,
            x1: 2000.0,
            y1: 2000.0,
        }]
    }

    /// Runs every 200 ms from `t0`.
    fn at(t0: Instant, run: u32) -> Instant {
        t0 + Duration::from_millis(200) * run
    }

    fn ids(t: &ObjectTracker) -> Vec<u64> {
        t.visible().map(|t| t.id).collect()
    }

    #[test]
    fn a_walker_keeps_its_id_and_gets_a_velocity() {
        let t0 = Instant::now();
        let mut tr = ObjectTracker::new(TrackerConfig::default());
        tr.observe(t0, &[person(100.0, 100.0)], &whole());
        assert_eq!(tr.tracks()[0].state, TrackState::Tentative);
        assert_eq!(
            ids(&tr),
            Vec::<u64>::new(),
            "tentative tracks are not shown"
        );
        for run in 1..10 {
            // 10 pixels a run: 50 px/s to the right.
            tr.observe(
                at(t0, run),
                &[person(100.0 + 10.0 * run as f64, 100.0)],
                &whole(),
            );
        }
        let t = &tr.tracks()[0];
        assert_eq!((t.id, t.state, t.hits), (1, TrackState::Confirmed, 10));
        assert!((t.velocity.0 - 50.0).abs() < 1.0, "{:?}", t.velocity);
        assert!(t.velocity.1.abs() < 1e-6);
        assert!(!t.stationary);
        // Half a second later it is predicted 25 px on.
        let p = t.predicted(at(t0, 9) + Duration::from_millis(500), tr.config());
        assert!((p.x0 - (190.0 + 25.0)).abs() < 1.0, "{p:?}");
    }

    #[test]
    fn a_missed_detection_or_two_does_not_end_a_track() {
        let t0 = Instant::now();
        let mut tr = ObjectTracker::new(TrackerConfig::default());
        for run in 0..4 {
            tr.observe(
                at(t0, run),
                &[person(100.0 + 10.0 * run as f64, 100.0)],
                &whole(),
            );
        }
        // Missed for three runs (600 ms): still confirmed, predicted on.
        for run in 4..7 {
            tr.observe(at(t0, run), &[], &whole());
            assert_eq!(tr.tracks()[0].state, TrackState::Confirmed);
        }
        // Found again where the prediction put it.
        tr.observe(at(t0, 7), &[person(170.0, 100.0)], &whole());
        assert_eq!(ids(&tr), [1]);
        assert_eq!(tr.tracks()[0].hits, 5);
    }

    #[test]
    fn a_single_false_detection_never_shows() {
        let t0 = Instant::now();
        let mut tr = ObjectTracker::new(TrackerConfig::default());
        tr.observe(t0, &[person(100.0, 100.0)], &whole());
        tr.observe(at(t0, 1), &[], &whole());
        assert!(
            tr.tracks().is_empty(),
            "a tentative track missed once is dropped"
        );
    }

    #[test]
    fn a_track_outside_where_the_detector_looked_is_not_missed() {
        let t0 = Instant::now();
        let mut tr = ObjectTracker::new(TrackerConfig::default());
        tr.observe(t0, &[person(100.0, 100.0)], &whole());
        let elsewhere = [Rect {
            x0: 500.0,
            y0: 0.0,
            x1: 800.0,
            y1: 300.0,
        }];
        tr.observe(at(t0, 1), &[], &elsewhere);
        assert_eq!(tr.tracks().len(), 1, "not looked for: kept");
        tr.observe(at(t0, 2), &[person(100.0, 100.0)], &whole());
        assert_eq!(tr.tracks()[0].state, TrackState::Confirmed);
    }

    #[test]
    fn two_people_crossing_keep_their_ids() {
        let t0 = Instant::now();
        let mut tr = ObjectTracker::new(TrackerConfig::default());
        // A walks right from x=100, B left from x=300, 20 px a run each: they cross at
        // x=200 in run 5, their boxes overlapping from run 4 to 6.
        let (mut a_id, mut b_id) = (None, None);
        for run in 0..11 {
            let ax = 100.0 + 20.0 * run as f64;
            let bx = 300.0 - 20.0 * run as f64;
            // The detector lists them in either order.
            let found = if run % 2 == 0 {
                vec![person(ax, 100.0), person(bx, 104.0)]
            } else {
                vec![person(bx, 104.0), person(ax, 100.0)]
            };
            tr.observe(at(t0, run), &found, &whole());
            let id_near = |x: f64| {
                tr.tracks()
                    .iter()
                    .min_by(|p, q| (p.rect.x0 - x).abs().total_cmp(&(q.rect.x0 - x).abs()))
                    .map(|t| t.id)
            };
            if run == 2 {
                (a_id, b_id) = (id_near(ax), id_near(bx));
            }
            if run > 2 && run != 5 {
                assert_eq!(id_near(ax), a_id, "run {run}");
                assert_eq!(id_near(bx), b_id, "run {run}");
            }
        }
        assert_eq!(tr.tracks().len(), 2);
        let a = tr.tracks().iter().find(|t| Some(t.id) == a_id).unwrap();
        assert!(a.velocity.0 > 50.0, "A still walks right: {:?}", a.velocity);
    }

    #[test]
    fn an_occluded_walker_is_lost_then_found_with_its_id() {
        let t0 = Instant::now();
        let mut tr = ObjectTracker::new(TrackerConfig::default());
        for run in 0..5 {
            tr.observe(
                at(t0, run),
                &[person(100.0 + 10.0 * run as f64, 100.0)],
                &whole(),
            );
        }
        // Behind a pillar for 2 s (10 runs).
        for run in 5..15 {
            tr.observe(at(t0, run), &[], &whole());
        }
        assert_eq!(tr.tracks()[0].state, TrackState::Lost);
        assert_eq!(ids(&tr), [1], "lost tracks are still shown");
        // It reappears where it would be, 10 px a run on.
        tr.observe(at(t0, 15), &[person(250.0, 100.0)], &whole());
        assert_eq!(ids(&tr), [1]);
        assert_eq!(tr.tracks()[0].state, TrackState::Confirmed);
        // Gone for good: forgotten after 4 s.
        for run in 16..40 {
            tr.observe(at(t0, run), &[], &whole());
        }
        assert!(tr.tracks().is_empty());
        // A newcomer gets a new id.
        tr.observe(at(t0, 40), &[person(250.0, 100.0)], &whole());
        assert_eq!(tr.tracks()[0].id, 2);
    }

    #[test]
    fn a_parked_car_becomes_stationary_and_categories_do_not_mix() {
        let t0 = Instant::now();
        let mut tr = ObjectTracker::new(TrackerConfig::default());
        let car = Detection {
            rect: Rect {
                x0: 100.0,
                y0: 100.0,
                x1: 200.0,
                y1: 160.0,
            },
            score: 0.7,
            category: Category::Vehicle,
            class: "Car".into(),
        };
        // A person on the car's box is another object.
        let mut on_it = person(100.0, 90.0);
        on_it.rect.y1 = 160.0;
        for run in 0..20 {
            tr.observe(at(t0, run), &[car.clone(), on_it.clone()], &whole());
        }
        assert_eq!(tr.tracks().len(), 2);
        let c = tr
            .tracks()
            .iter()
            .find(|t| t.category == Category::Vehicle)
            .unwrap();
        assert!(c.stationary, "still for 3.8 s");
        assert_eq!(c.class, "Car");
    }

    #[test]
    fn tick_ages_tracks_without_runs() {
        let t0 = Instant::now();
        let mut tr = ObjectTracker::new(TrackerConfig::default());
        tr.observe(t0, &[person(100.0, 100.0)], &whole());
        tr.observe(at(t0, 1), &[person(100.0, 100.0)], &whole());
        tr.tick(at(t0, 1) + Duration::from_secs(2));
        assert_eq!(tr.tracks()[0].state, TrackState::Lost);
        tr.tick(at(t0, 1) + Duration::from_secs(5));
        assert!(tr.tracks().is_empty());
    }
}
