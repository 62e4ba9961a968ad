//! Motion regions the model has confirmed, followed while they keep moving.
//!
//! The model does not see every person in every run: a walker turns, passes a sign, or
//! shares a crop with someone more prominent, and goes unseen for a second or two. A
//! motion region that held a tracked person stays confirmed while motion keeps following
//! it (each run's regions that overlap it inherit the confirmation), for a while without
//! a fresh sighting: a person walking out of the model's view stays in the ROI, and
//! motion that never held a person (leaves, shadows, lights) never enters it.

use super::tracker::Track;

/// One confirmed motion region.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Confirmed {
    /// The region, in the caller's coordinates; `class` and `score` are the person's.
    pub region: Track,
    /// Runs since a tracked person was last inside the region.
    pub unseen: u32,
}

/// The motion regions confirmed so far.
#[derive(Debug)]
pub struct ConfirmedMotion {
    /// Runs a region stays confirmed without a person seen in it.
    lapse_runs: u32,
    regions: Vec<Confirmed>,
}

impl ConfirmedMotion {
    pub fn new(lapse_runs: u32) -> Self {
        Self {
            lapse_runs,
            regions: Vec::new(),
        }
    }

    /// The motion regions confirmed now: those holding a person, and those that follow (by
    /// overlap) a region confirmed in the previous run that has not lapsed.
    pub fn regions(&self) -> &[Confirmed] {
        &self.regions
    }

    /// Feeds one run: this run's motion regions and tracked people.
    pub fn update(&mut self, motion: &[Track], people: &[Track]) {
        self.regions = motion
            .iter()
            .filter_map(|m| {
                if let Some(p) = people.iter().find(|p| p.overlaps(m)) {
                    return Some(Confirmed {
                        region: Track {
                            class: p.class,
                            score: p.score,
                            ..*m
                        },
                        unseen: 0,
                    });
                }
                self.regions
                    .iter()
                    .filter(|c| c.unseen < self.lapse_runs && c.region.overlaps(m))
                    .min_by_key(|c| c.unseen)
                    .map(|c| Confirmed {
                        region: Track {
                            class: c.region.class,
                            score: c.region.score,
                            ..*m
                        },
                        unseen: c.unseen + 1,
                    })
            })
            .collect();
    }

    /// How much a region's confirmation has faded: 1 with a person in it, towards 0 as it
    /// nears its lapse.
    pub fn freshness(&self, c: &Confirmed) -> f32 {
        1.0 - c.unseen as f32 / (self.lapse_runs + 1) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x0: f64, x1: f64) -> Track {
        Track::new(x0, 0.0, x1, 10.0, 0.0)
    }

    #[test]
    fn a_region_with_a_person_is_confirmed_and_motion_alone_is_not() {
        let mut c = ConfirmedMotion::new(3);
        let person = Track::new(12.0, 2.0, 16.0, 8.0, 0.9).with_class(4);
        c.update(&[b(10.0, 30.0), b(50.0, 60.0)], &[person]);
        let got = c.regions();
        assert_eq!(got.len(), 1, "the leaves at 50..60 hold no one");
        assert_eq!((got[0].region.x0, got[0].region.x1), (10.0, 30.0));
        assert_eq!((got[0].region.class, got[0].region.score), (4, 0.9));
        assert_eq!(got[0].unseen, 0);
    }

    #[test]
    fn confirmation_follows_moving_motion_until_it_lapses() {
        let mut c = ConfirmedMotion::new(2);
        let person = Track::new(12.0, 2.0, 16.0, 8.0, 0.9);
        c.update(&[b(10.0, 30.0)], &[person]);
        // The model loses the person; the motion walks on, overlapping its last place.
        c.update(&[b(15.0, 35.0)], &[]);
        assert_eq!(c.regions().len(), 1);
        c.update(&[b(20.0, 40.0)], &[]);
        let got = c.regions()[0];
        assert_eq!((got.region.x0, got.unseen), (20.0, 2));
        assert!(c.freshness(&got) < 0.5);
        c.update(&[b(25.0, 45.0)], &[]);
        assert!(c.regions().is_empty(), "lapsed after 2 runs unseen");
        // Seen again: confirmed afresh.
        let again = Track::new(30.0, 2.0, 34.0, 8.0, 0.8);
        c.update(&[b(25.0, 45.0)], &[again]);
        assert_eq!(c.regions()[0].unseen, 0);
    }

    #[test]
    fn motion_that_does_not_follow_a_confirmed_region_is_not_confirmed() {
        let mut c = ConfirmedMotion::new(5);
        c.update(&[b(10.0, 30.0)], &[Track::new(12.0, 2.0, 16.0, 8.0, 0.9)]);
        c.update(&[b(40.0, 50.0)], &[]);
        assert!(c.regions().is_empty());
        c.update(&[b(10.0, 30.0)], &[]);
        assert!(
            c.regions().is_empty(),
            "a gap in the motion ends the confirmation"
        );
    }
}
