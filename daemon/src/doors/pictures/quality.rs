//! The `/ws/jpeg` policy: from what the client says it renders, the JPEG quality (and then
//! the picture size) that holds the target rate. Sans-IO: fed reports and the time, it
//! answers the settings to use.
//!
//! The default is the rule of the systems focusd grew from: hold 28–32 frames a second by
//! stepping quality 5 at a time. The band scales with the target (a 15 fps camera is held
//! at 14–16). Below the band quality goes down, at the floor the picture halves; when the
//! client keeps up (above the band, or drawing 97% of the frames offered) the size comes
//! back first, then quality, up to the door's quality. One step a second at most: a
//! report averages a second of rendering.

use std::time::{Duration, Instant};

use super::Scale;

/// The seed's band at 30 fps.
const BAND_AT_30: (f64, f64) = (28.0, 32.0);
/// Quality changes by this much a step.
pub const STEP: u8 = 5;
/// Quality goes no lower; below it, the picture halves instead.
pub const FLOOR: u8 = 30;
/// At most one step in this long.
const SETTLE: Duration = Duration::from_secs(1);

/// One consumer's settings and how it got there.
#[derive(Clone, Debug)]
pub struct QualityPolicy {
    /// The quality now.
    quality: u8,
    /// The most it goes up to (the door's `quality`).
    ceiling: u8,
    scale: Scale,
    /// The band of rendered rates to hold.
    band: (f64, f64),
    /// The rate the server offers (the band is relative to it).
    target: f64,
    last_step: Option<Instant>,
}

impl QualityPolicy {
    /// Starts at `quality` (at most `ceiling`), full size, holding `target` frames a
    /// second.
    pub fn new(quality: u8, ceiling: u8, target: f64) -> QualityPolicy {
        let ratio = target / 30.0;
        QualityPolicy {
            quality: quality.clamp(FLOOR.min(ceiling), ceiling.max(1)),
            ceiling,
            scale: Scale::Full,
            band: (BAND_AT_30.0 * ratio, BAND_AT_30.1 * ratio),
            target,
            last_step: None,
        }
    }

    pub fn quality(&self) -> u8 {
        self.quality
    }

    pub fn scale(&self) -> Scale {
        self.scale
    }

    /// The client rendered `fps` frames a second over its last second; says whether the
    /// settings changed.
    pub fn report(&mut self, fps: f64, now: Instant) -> bool {
        if !fps.is_finite() || self.last_step.is_some_and(|t| now < t + SETTLE) {
            return false;
        }
        // Keeping up: above the band, or (nearly) every frame offered.
        let keeping_up = fps > self.band.1 || fps >= self.target * 0.97;
        let changed = if fps < self.band.0 {
            if self.quality >= FLOOR + STEP {
                self.quality -= STEP;
                true
            } else if self.scale == Scale::Full {
                self.scale = Scale::Half;
                true
            } else {
                false
            }
        } else if keeping_up {
            if self.scale == Scale::Half {
                self.scale = Scale::Full;
                true
            } else if self.quality + STEP <= self.ceiling {
                self.quality += STEP;
                true
            } else {
                false
            }
        } else {
            false
        };
        if changed {
            self.last_step = Some(now);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_client_loses_quality_then_size_and_gets_them_back_in_reverse() {
        let t0 = Instant::now();
        let mut p = QualityPolicy::new(80, 80, 30.0);
        let mut t = t0;
        let mut step = |p: &mut QualityPolicy, fps| {
            t += Duration::from_millis(1100);
            p.report(fps, t)
        };
        // Inside the band: nothing moves.
        assert!(!step(&mut p, 29.0));
        assert_eq!((p.quality(), p.scale()), (80, Scale::Full));
        // Too slow: 5 at a time down to the floor, then half size.
        for q in [75, 70, 65, 60, 55, 50, 45, 40, 35, 30] {
            assert!(step(&mut p, 20.0));
            assert_eq!((p.quality(), p.scale()), (q, Scale::Full));
        }
        assert!(step(&mut p, 20.0));
        assert_eq!((p.quality(), p.scale()), (30, Scale::Half));
        assert!(!step(&mut p, 20.0), "nothing lower to go to");
        // Keeping up: size first, then quality up to the ceiling.
        assert!(step(&mut p, 30.0));
        assert_eq!((p.quality(), p.scale()), (30, Scale::Full));
        assert!(step(&mut p, 30.0));
        assert_eq!(p.quality(), 35);
    }

    #[test]
    fn one_step_a_second_and_the_band_follows_the_target() {
        let t0 = Instant::now();
        let mut p = QualityPolicy::new(80, 90, 15.0);
        assert!(p.report(10.0, t0));
        assert!(!p.report(10.0, t0 + Duration::from_millis(500)), "settling");
        assert_eq!(p.quality(), 75);
        // 14.5 is inside a 15 fps camera's band (14-16), and not the full rate.
        assert!(!p.report(14.5, t0 + Duration::from_secs(2)));
        assert!(p.report(15.0, t0 + Duration::from_secs(3)));
        assert_eq!(p.quality(), 80);
        assert!(!p.report(f64::NAN, t0 + Duration::from_secs(9)));
    }
}
