//! Box tracking shared by the detectors, so the ROI does not flicker: each track follows
//! the new box it overlaps most, grows at once to cover it, shrinks part of the way per
//! run once the slack is worth it, outlives its last sighting by a few runs, and tracks
//! that mostly cover each other merge into one.

/// Fraction of the gap an edge moves inward per run when a box shrinks.
const SHRINK: f64 = 0.5;
/// Two tracks merge when they share more than this fraction of the smaller one.
const MERGE_OVERLAP: f64 = 0.5;

/// A box in any one coordinate system (the caller's), with the best score that fed it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Track {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
    /// Confidence of the sighting that last fed this track, 0–1.
    pub score: f32,
    /// What the sighting was (a detector's class index; 0 for motion).
    pub class: usize,
    /// Runs since a sighting last touched this track.
    pub idle: u32,
}

impl Track {
    pub fn new(x0: f64, y0: f64, x1: f64, y1: f64, score: f32) -> Self {
        Self {
            x0,
            y0,
            x1,
            y1,
            score,
            class: 0,
            idle: 0,
        }
    }

    pub fn overlaps(&self, o: &Track) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }

    pub fn area(&self) -> f64 {
        (self.x1 - self.x0).max(0.0) * (self.y1 - self.y0).max(0.0)
    }

    pub fn overlap_area(&self, o: &Track) -> f64 {
        let w = self.x1.min(o.x1) - self.x0.max(o.x0);
        let h = self.y1.min(o.y1) - self.y0.max(o.y0);
        w.max(0.0) * h.max(0.0)
    }

    fn union(&self, o: &Track) -> Track {
        Track {
            x0: self.x0.min(o.x0),
            y0: self.y0.min(o.y0),
            x1: self.x1.max(o.x1),
            y1: self.y1.max(o.y1),
            score: self.score.max(o.score),
            class: if o.score > self.score {
                o.class
            } else {
                self.class
            },
            idle: self.idle.min(o.idle),
        }
    }
}

/// The tracks of one detector.
#[derive(Debug)]
pub struct Tracker {
    /// How many runs a track outlives its last sighting.
    hold_runs: u32,
    /// Slack under this fraction of a box's size is kept rather than taken in.
    dead_band: f64,
    tracks: Vec<Track>,
}

impl Tracker {
    pub fn new(hold_runs: u32, dead_band: f64) -> Self {
        Self {
            hold_runs,
            dead_band,
            tracks: Vec::new(),
        }
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    pub fn clear(&mut self) {
        self.tracks.clear();
    }

    /// How much a held track's score has faded: 1 when just seen, towards 0 at the end.
    pub fn freshness(&self, t: &Track) -> f32 {
        1.0 - t.idle as f32 / (self.hold_runs + 1) as f32
    }

    /// Feeds one run's sightings.
    pub fn update(&mut self, sightings: &[Track]) {
        // Each track follows the one sighting it overlaps most; a sighting no track follows
        // starts a track of its own. Following a union instead would keep one box spanning
        // two objects long after they parted.
        let mut claimed = vec![false; sightings.len()];
        let mut next: Vec<Track> = Vec::new();
        for track in &self.tracks {
            let best = sightings
                .iter()
                .enumerate()
                .filter(|(_, b)| b.overlaps(track))
                .max_by(|(_, a), (_, b)| a.overlap_area(track).total_cmp(&b.overlap_area(track)));
            let Some((i, target)) = best else {
                if track.idle < self.hold_runs {
                    next.push(Track {
                        idle: track.idle + 1,
                        ..*track
                    });
                }
                continue;
            };
            claimed[i] = true;
            // Every move of an edge reveals or hides a strip the encoder must code anew:
            // slack smaller than the dead band is kept.
            let (w, h) = (track.x1 - track.x0, track.y1 - track.y0);
            let ease = |now: f64, want: f64, grows: bool, size: f64| {
                if grows {
                    want
                } else if (want - now).abs() > self.dead_band * size {
                    now + (want - now) * SHRINK
                } else {
                    now
                }
            };
            next.push(Track {
                x0: ease(track.x0, target.x0, target.x0 < track.x0, w),
                y0: ease(track.y0, target.y0, target.y0 < track.y0, h),
                x1: ease(track.x1, target.x1, target.x1 > track.x1, w),
                y1: ease(track.y1, target.y1, target.y1 > track.y1, h),
                score: target.score,
                class: target.class,
                idle: 0,
            });
        }
        next.extend(
            sightings
                .iter()
                .zip(&claimed)
                .filter(|(_, c)| !**c)
                .map(|(b, _)| Track { idle: 0, ..*b }),
        );
        let mut merged: Vec<Track> = Vec::new();
        for t in next {
            match merged
                .iter_mut()
                .find(|m| m.overlap_area(&t) > MERGE_OVERLAP * m.area().min(t.area()))
            {
                Some(m) => *m = m.union(&t),
                None => merged.push(t),
            }
        }
        self.tracks = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_at_once_shrinks_gently_and_is_held() {
        let mut t = Tracker::new(2, 0.2);
        t.update(&[Track::new(10.0, 10.0, 20.0, 20.0, 0.9)]);
        t.update(&[Track::new(8.0, 10.0, 16.0, 20.0, 0.8)]);
        let got = t.tracks()[0];
        assert_eq!(
            (got.x0, got.x1),
            (8.0, 18.0),
            "left grows, right shrinks halfway"
        );
        assert_eq!(got.score, 0.8);
        t.update(&[Track::new(8.0, 10.0, 17.0, 20.0, 0.8)]);
        assert_eq!(
            t.tracks()[0].x1,
            18.0,
            "1 of slack in 10 is under the dead band"
        );
        t.update(&[]);
        t.update(&[]);
        assert_eq!(t.tracks().len(), 1, "held for 2 runs");
        assert!(t.freshness(&t.tracks()[0]) < 0.5);
        t.update(&[]);
        assert!(t.tracks().is_empty());
    }

    #[test]
    fn overlapping_tracks_merge_and_separate_ones_do_not() {
        let mut t = Tracker::new(2, 0.2);
        t.update(&[
            Track::new(0.0, 0.0, 10.0, 10.0, 0.6),
            Track::new(2.0, 2.0, 11.0, 11.0, 0.7),
            Track::new(50.0, 50.0, 60.0, 60.0, 0.9),
        ]);
        assert_eq!(t.tracks().len(), 2);
        assert_eq!(t.tracks()[0].x1, 11.0);
        assert_eq!(t.tracks()[0].score, 0.7);
    }
}
