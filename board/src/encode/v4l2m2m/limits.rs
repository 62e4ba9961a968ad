//! What an H.264 V4L2 encoder can be asked for, checked before it starts so that a bad
//! size or rate is a clear configuration error instead of a stream no browser decodes.
//!
//! Two sources: the H.264 levels (ITU-T H.264 table A-1: macroblocks per picture and per
//! second, bitrate), and what is known of the Pi 4's `bcm2835-codec`, from its driver and
//! its maintainers' answers, **unverified here** (no virtual driver encodes H.264):
//! - it encodes up to level 4.2 (5.0/5.1 were added in 2022 for 1920x1200, and
//!   raspberrypi/linux#6045 shows such pictures turning to garbage with later firmware;
//!   its maintainer says macroblocks beyond level 4.1's 8192 per picture come out corrupt),
//!   so pictures are held to 8192 macroblocks (1920x1080 is 8160);
//! - it takes widths and heights up to 1920;
//! - its rows must start on 32-byte boundaries (raspberrypi/firmware#1608: 1296x972 in a
//!   packed buffer comes out corrupt); the session copies pictures into the strides the
//!   driver reports, so every size it accepts is laid out that way;
//! - rate control above 20 Mbit/s is not what it was built for: focusd refuses more;
//! - the level must fit the size and rate, or the encoder refuses to start
//!   (raspberrypi/linux#3974): the lowest level that fits is chosen.

use crate::encode::EncoderSettings;

/// One H.264 level's limits (table A-1, Baseline/Main bitrates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// As people write it, `4.1`.
    pub name: &'static str,
    /// Its value in `V4L2_CID_MPEG_VIDEO_H264_LEVEL`'s menu.
    pub control: i64,
    /// Macroblocks per second.
    pub max_mb_per_s: u64,
    /// Macroblocks per picture.
    pub max_mb_per_picture: u64,
    /// Video bitrate, kbit/s.
    pub max_kbps: u32,
}

/// The levels a camera stream uses, lowest first (V4L2 menu values 9–13).
pub const LEVELS: [Level; 5] = [
    Level {
        name: "3.1",
        control: 9,
        max_mb_per_s: 108_000,
        max_mb_per_picture: 3_600,
        max_kbps: 14_000,
    },
    Level {
        name: "3.2",
        control: 10,
        max_mb_per_s: 216_000,
        max_mb_per_picture: 5_120,
        max_kbps: 20_000,
    },
    Level {
        name: "4.0",
        control: 11,
        max_mb_per_s: 245_760,
        max_mb_per_picture: 8_192,
        max_kbps: 20_000,
    },
    Level {
        name: "4.1",
        control: 12,
        max_mb_per_s: 245_760,
        max_mb_per_picture: 8_192,
        max_kbps: 50_000,
    },
    Level {
        name: "4.2",
        control: 13,
        max_mb_per_s: 522_240,
        max_mb_per_picture: 8_704,
        max_kbps: 50_000,
    },
];

/// What a driver can be asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Widest picture.
    pub max_width: u32,
    /// Tallest picture.
    pub max_height: u32,
    /// Smallest side.
    pub min_side: u32,
    /// Macroblocks per picture that still come out intact.
    pub max_mb_per_picture: u64,
    /// Highest level it encodes (its `LEVELS` entry's name).
    pub max_level: &'static str,
    /// Highest bitrate focusd asks of it, kbit/s.
    pub max_kbps: u32,
}

impl Limits {
    /// The Pi 4's bcm2835-codec (see the module docs).
    pub const BCM2835: Limits = Limits {
        max_width: 1920,
        max_height: 1920,
        min_side: 32,
        max_mb_per_picture: 8_192,
        max_level: "4.2",
        max_kbps: 20_000,
    };

    /// Any other V4L2 H.264 encoder: the levels' limits up to 4.2, the driver's own
    /// checks for the rest.
    pub const GENERIC: Limits = Limits {
        max_width: 4096,
        max_height: 4096,
        min_side: 16,
        max_mb_per_picture: 8_704,
        max_level: "4.2",
        max_kbps: 50_000,
    };

    /// The limits for a driver, by its name.
    pub fn for_driver(driver: &str) -> Limits {
        match driver {
            "bcm2835-codec" => Self::BCM2835,
            _ => Self::GENERIC,
        }
    }

    /// Checks `settings` and chooses the level: the lowest that holds the picture size,
    /// the macroblock rate and the bitrate. The error says what to change.
    pub fn check(&self, settings: &EncoderSettings) -> Result<Level, String> {
        let (w, h) = (settings.width, settings.height);
        if !w.is_multiple_of(2) || !h.is_multiple_of(2) {
            return Err(format!("{w}x{h}: width and height must be even"));
        }
        if w < self.min_side || h < self.min_side {
            return Err(format!(
                "{w}x{h} is smaller than the encoder's {min}x{min}",
                min = self.min_side
            ));
        }
        if w > self.max_width || h > self.max_height {
            return Err(format!(
                "{w}x{h} is larger than the encoder takes ({}x{} at most)",
                self.max_width, self.max_height
            ));
        }
        let mbs = u64::from(w.div_ceil(16)) * u64::from(h.div_ceil(16));
        if mbs > self.max_mb_per_picture {
            return Err(format!(
                "{w}x{h} is {mbs} macroblocks; beyond {} this encoder's pictures come out corrupt (1920x1080 is 8160)",
                self.max_mb_per_picture
            ));
        }
        if settings.bitrate_kbps > self.max_kbps {
            return Err(format!(
                "{} kbit/s is above the {} kbit/s this encoder is driven at",
                settings.bitrate_kbps, self.max_kbps
            ));
        }
        let mb_rate = (mbs as f64 * settings.fps.max(1.0)).ceil() as u64;
        LEVELS
            .iter()
            .take_while(|l| l.name <= self.max_level)
            .find(|l| {
                mbs <= l.max_mb_per_picture
                    && mb_rate <= l.max_mb_per_s
                    && settings.bitrate_kbps <= l.max_kbps
            })
            .copied()
            .ok_or_else(|| {
                format!(
                    "{w}x{h} at {} fps is {mb_rate} macroblocks/s, more than level {} allows ({}): lower the rate or the size",
                    settings.fps,
                    self.max_level,
                    LEVELS
                        .iter()
                        .find(|l| l.name == self.max_level)
                        .map_or(0, |l| l.max_mb_per_s)
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::PixelFormat;

    fn settings(width: u32, height: u32, fps: f64, bitrate_kbps: u32) -> EncoderSettings {
        EncoderSettings {
            width,
            height,
            format: PixelFormat::I420,
            fps,
            bitrate_kbps,
            keyframe_interval: 60,
            temporal_layers: 1,
        }
    }

    #[test]
    fn the_lowest_level_that_fits_is_chosen() {
        let pi = Limits::BCM2835;
        for (w, h, fps, kbps, level) in [
            (1280, 720, 30.0, 4_000, "3.1"),
            (1280, 720, 60.0, 4_000, "3.2"),
            (1920, 1080, 30.0, 8_000, "4.0"),
            (1920, 1080, 30.0, 8_000, "4.0"),
            (1920, 1080, 60.0, 8_000, "4.2"),
            (640, 360, 30.0, 16_000, "3.2"),
            (320, 180, 30.0, 300, "3.1"),
        ] {
            assert_eq!(
                pi.check(&settings(w, h, fps, kbps)).unwrap().name,
                level,
                "{w}x{h}@{fps} {kbps}k"
            );
        }
    }

    #[test]
    fn what_the_pi_encoder_cannot_do_is_refused_with_the_reason() {
        let pi = Limits::BCM2835;
        for (w, h, fps, kbps, why) in [
            (1920, 1200, 30.0, 8_000, "macroblocks"),
            (2560, 1440, 30.0, 8_000, "larger than"),
            (1920, 1080, 30.0, 25_000, "kbit/s"),
            (1281, 720, 30.0, 4_000, "even"),
            (16, 16, 30.0, 100, "smaller"),
            (1920, 1080, 120.0, 8_000, "level 4.2"),
        ] {
            let err = pi.check(&settings(w, h, fps, kbps)).unwrap_err();
            assert!(err.contains(why), "{w}x{h}@{fps} {kbps}k: {err}");
        }
        // A size in range whose rows a packed buffer would misalign is accepted: the
        // session copies it into the driver's strides.
        assert!(pi.check(&settings(1296, 972, 30.0, 6_000)).is_ok());
    }

    #[test]
    fn levels_are_ordered_and_match_the_v4l2_menu() {
        for pair in LEVELS.windows(2) {
            assert!(pair[0].name < pair[1].name);
            assert_eq!(pair[0].control + 1, pair[1].control);
        }
        // V4L2_MPEG_VIDEO_H264_LEVEL_4_1 in videodev2.h.
        assert_eq!(LEVELS.iter().find(|l| l.name == "4.1").unwrap().control, 12);
    }
}
