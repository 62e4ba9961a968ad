//! libcamera cameras through GStreamer's `libcamerasrc` (feature `gstreamer`): the
//! Raspberry Pi's CSI cameras, and any camera a libcamera pipeline handler drives (vimc,
//! the kernel's virtual media-controller camera, is what the tests run against).
//!
//! focusd asks the camera for what it wants, and adapts when the camera offers less:
//! 1. **Two streams, exact**: the main picture in NV12 at `--size` and a second,
//!    low-resolution stream in I420 for the context track, both scaled by the ISP (a
//!    Pi's `rpi/vc4` or `rpi/pisp` handler makes both), so focusd scales nothing.
//! 2. **One stream, exact**, when the camera cannot make two (libcamera has no
//!    configuration for two roles): focusd scales the context picture itself, as for a
//!    V4L2 camera. Steps 1 and 2 are tried when the camera offers NV12.
//! 3. **One stream in the camera's own format, converted**: the format cheapest to turn
//!    into NV12 at `--size`; when the camera adjusts the size (vimc offers RGB only, and
//!    rounds 640 wide down to 636), the mode it settled on, as it set it on its pad, is
//!    asked for instead. GStreamer converts and scales it to `--size` in NV12.
//!
//! **In a helper process** ([`child`]): libcamera 0.0.3's `libcamerasrc` (Debian 12's)
//! queues a request to the camera before it records it, and a request that completes in
//! between is a null dereference in libcamera's thread (seen on vimc within seconds under
//! load). A crash there must not take the daemon: focusd runs the pipeline in a child
//! (its own binary, `focusd __libcamera-capture`), reads the pictures from its stdout, and
//! a child that dies is a capture error like an unplugged camera.
//!
//! Every attempt is a fresh pipeline; the first that delivers a picture is kept. A camera
//! that stops delivering (unplugged, its driver unbound) is a capture error after
//! [`gst::STALL`](super::gst::STALL), and the capture thread opens it again with backoff,
//! as for every source.

use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

mod child;

pub(in crate::source) use child::{open, run_child};

use super::gst::{GstSource, LORES_SINK, MAIN_SINK, Playback, parse};
use crate::source::{Camera, SourceError, SourceSpec};

/// The name of the `libcamerasrc` element in focusd's pipelines.
const ELEMENT: &str = "cam";

/// Each libcamera camera's id and the caps it offers for video, as libcamera's GStreamer
/// device provider lists them (nothing when `libcamerasrc` is not installed).
fn listed() -> Vec<(String, Option<gst::Caps>)> {
    if gst::init().is_err() {
        return Vec::new();
    }
    let Some(provider) = gst::DeviceProviderFactory::by_name("libcameraprovider") else {
        return Vec::new();
    };
    provider
        .devices()
        .into_iter()
        .map(|d| (d.display_name().to_string(), d.caps()))
        .collect()
}

/// The libcamera cameras, with the formats each offers for video.
pub(in crate::source) fn cameras() -> Vec<Camera> {
    listed()
        .into_iter()
        .map(|(id, caps)| Camera {
            spec: SourceSpec::Libcamera(Some(id)),
            modes: caps.map(|c| modes(&c)).unwrap_or_default(),
        })
        .collect()
}

/// The first libcamera camera.
pub(in crate::source) fn first_camera() -> Option<SourceSpec> {
    cameras().into_iter().next().map(|c| c.spec)
}

/// The pixel formats camera `id` (the first when `None`) offers for video, in its order;
/// empty when it is not listed (the attempts then find out).
fn formats_of(id: Option<&str>) -> Vec<String> {
    let listed = listed();
    let caps = match id {
        Some(id) => listed.into_iter().find(|(name, _)| name == id),
        None => listed.into_iter().next(),
    };
    let Some((_, Some(caps))) = caps else {
        return Vec::new();
    };
    let mut formats: Vec<String> = Vec::new();
    for s in caps.iter() {
        if let Ok(f) = s.get::<&str>("format")
            && !formats.iter().any(|seen| seen == f)
        {
            formats.push(f.to_string());
        }
    }
    formats
}

/// Of what a camera offers, the format converted most cheaply to NV12.
fn cheapest_to_convert(formats: &[String]) -> Option<&str> {
    const PREFERRED: [&str; 6] = ["NV12", "I420", "NV21", "YUY2", "UYVY", "RGB"];
    PREFERRED
        .iter()
        .find(|p| formats.iter().any(|f| f == *p))
        .copied()
        .or(formats.first().map(String::as_str))
}

/// A camera's caps, a line per format: its size range when it has one (`RGB
/// 48x48-4096x2160`), else its sizes (`NV12 1280x720 1920x1080`).
fn modes(caps: &gst::CapsRef) -> Vec<String> {
    let dimension = |s: &gst::StructureRef, field: &str| -> Option<(i32, i32)> {
        if let Ok(v) = s.get::<i32>(field) {
            return Some((v, v));
        }
        s.get::<gst::IntRange<i32>>(field)
            .ok()
            .map(|r| (r.min(), r.max()))
    };
    // Per format, in the caps' order: its ranges, and its fixed sizes.
    let mut formats: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for s in caps.iter() {
        let format = s.get::<&str>("format").unwrap_or("?");
        let (Some((w0, w1)), Some((h0, h1))) = (dimension(s, "width"), dimension(s, "height"))
        else {
            continue;
        };
        let at = match formats.iter().position(|(f, _, _)| f == format) {
            Some(at) => at,
            None => {
                formats.push((format.to_string(), Vec::new(), Vec::new()));
                formats.len() - 1
            }
        };
        let (_, ranges, sizes) = &mut formats[at];
        if (w0, h0) == (w1, h1) {
            sizes.push(format!("{w0}x{h0}"));
        } else {
            ranges.push(format!("{w0}x{h0}-{w1}x{h1}"));
        }
    }
    formats
        .into_iter()
        .map(|(format, ranges, sizes)| {
            let shown = if ranges.is_empty() { sizes } else { ranges };
            format!("{format} {}", shown.join(" "))
        })
        .collect()
}

/// What one stream of a pipeline asks libcamera for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ask {
    /// Exactly these caps: what focusd takes, no conversion.
    Exact(String),
    /// Caps the camera gives (its own format, or the mode it settled on instead of what
    /// was asked), converted and scaled to the wanted (format, width, height).
    Adapted {
        from: String,
        format: &'static str,
        size: (u32, u32),
    },
}

impl Ask {
    /// The pipeline from `libcamerasrc`'s pad to the appsink `sink`.
    fn branch(&self, pad: &str, sink: &str) -> String {
        match self {
            Ask::Exact(caps) => format!("{ELEMENT}.{pad} ! {caps} ! appsink name={sink}"),
            Ask::Adapted {
                from,
                format,
                size: (w, h),
            } => format!(
                "{ELEMENT}.{pad} ! capsfilter caps=\"{}\" ! videoconvert ! videoscale \
                 ! video/x-raw,format={format},width={w},height={h} ! appsink name={sink}",
                from.replace('"', "")
            ),
        }
    }
}

/// The `libcamerasrc` pipeline for camera `id` (the first one when `None`): its always
/// pad gives the main stream, its request pad `src_0` the low-resolution one.
fn pipeline(id: Option<&str>, main: &Ask, lores: Option<&Ask>) -> String {
    let name = id
        .map(|id| format!(" camera-name=\"{}\"", id.replace('"', "")))
        .unwrap_or_default();
    let mut p = format!(
        "libcamerasrc name={ELEMENT}{name} {}",
        main.branch("src", MAIN_SINK)
    );
    if let Some(lores) = lores {
        p.push(' ');
        p.push_str(&lores.branch("src_0", LORES_SINK));
    }
    p
}

/// The exact caps focusd asks for: the main picture in NV12 at `size` and `fps`, the
/// low-resolution one in I420 (a Pi 4's ISP makes its second output in YUV420 only).
fn exact(size: (u32, u32), fps: f64, lores_width: u32) -> (Ask, Ask) {
    let fps = (fps.round() as u32).max(1);
    let (lw, lh) = crate::scale::lores_size(size, lores_width);
    (
        Ask::Exact(format!(
            "video/x-raw,format=NV12,width={},height={},framerate={fps}/1",
            size.0, size.1
        )),
        Ask::Exact(format!("video/x-raw,format=I420,width={lw},height={lh}")),
    )
}

/// Caps for `format` at `size` or up to an eighth smaller each way: libcamerasrc fixes a
/// range at its end nearest the camera's default size, which for any size up to that
/// default is `size` itself, and the camera may then round it down.
fn near(format: &str, (w, h): (u32, u32)) -> String {
    format!(
        "video/x-raw,format={format},width=[{},{w}],height=[{},{h}]",
        w - w / 8,
        h - h / 8
    )
}

/// The caps each `libcamerasrc` pad of `pipeline` settles on, as they are set (a pad whose
/// caps the next element refuses still shows them: they are what the camera offered).
fn watch_offers(pipeline: &gst::Pipeline) -> Arc<Mutex<Vec<(String, String)>>> {
    let offers = Arc::new(Mutex::new(Vec::new()));
    let Some(camera) = pipeline.by_name(ELEMENT) else {
        return offers;
    };
    for pad in camera.src_pads() {
        let offers = offers.clone();
        pad.connect_notify(Some("caps"), move |pad, _| {
            if let Some(caps) = pad.current_caps() {
                // A poisoned lock only means another pad's callback panicked; the list
                // is still whole.
                let mut offers = offers.lock().unwrap_or_else(|e| e.into_inner());
                offers.retain(|(name, _)| *name != pad.name());
                offers.push((pad.name().to_string(), caps.to_string()));
            }
        });
    }
    offers
}

/// One attempt: the source when `description` delivers, else the error and the caps the
/// camera offered on each pad (`src`, `src_0`).
fn attempt(
    description: &str,
    label: &str,
) -> Result<GstSource, (SourceError, Vec<(String, String)>)> {
    let pipeline = parse(description, label).map_err(|e| (e, Vec::new()))?;
    let offers = watch_offers(&pipeline);
    GstSource::start(pipeline, label.to_string(), Playback::Live).map_err(|e| {
        let offered = offers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (e, offered)
    })
}

/// Opens camera `id` (the first one when `None`) in this process, as the module docs say:
/// two exact streams, else one, else the camera's own format converted, at the mode it
/// settles on. The helper process of [`child`] runs this.
fn negotiate(
    id: Option<&str>,
    size: (u32, u32),
    fps: f64,
    lores_width: u32,
) -> Result<GstSource, SourceError> {
    let camera = id.unwrap_or("(first camera)");
    gst::init().map_err(|e| {
        SourceError::Format(format!("libcamera {camera}: GStreamer cannot start: {e}"))
    })?;
    if gst::ElementFactory::find("libcamerasrc").is_none() {
        return Err(SourceError::Format(format!(
            "libcamera {camera}: libcamerasrc is not installed (Raspberry Pi OS: sudo apt install gstreamer1.0-libcamera)"
        )));
    }
    let formats = formats_of(id);
    let mut refusals = Vec::new();
    // 1 and 2: exactly what focusd takes, when the camera offers NV12 (or is not listed,
    // and trying is how to find out).
    if formats.is_empty() || formats.iter().any(|f| f == "NV12") {
        let (main, lores) = exact(size, fps, lores_width);
        for (lores, label) in [
            (Some(&lores), format!("libcamera {camera}")),
            (None, format!("libcamera {camera} (one stream)")),
        ] {
            match attempt(&pipeline(id, &main, lores), &label) {
                Ok(source) => return Ok(source),
                Err((e, _)) => refusals.push(e.to_string()),
            }
        }
    }
    // 3: the camera's own format near `size`, converted. A size range, not a size: a
    // camera that rounds the size down (to its alignment) is then taken at once, since a
    // refused mode is found out only by starting the camera, and stopping it again at once
    // crashes libcamera 0.0.3's vimc handler (a buffer completes after its request is
    // gone). When the camera settles elsewhere, what it set on its pad is asked next.
    if let Some(format) = cheapest_to_convert(&formats) {
        let label = format!("libcamera {camera} (one stream, its nearest mode converted)");
        let mut asked = near(format, size);
        for _ in 0..2 {
            let main = Ask::Adapted {
                from: asked.clone(),
                format: "NV12",
                size,
            };
            match attempt(&pipeline(id, &main, None), &label) {
                Ok(source) => {
                    tracing::info!(
                        camera,
                        asked,
                        "libcamera: GStreamer converts and scales the camera's mode"
                    );
                    return Ok(source);
                }
                Err((e, offered)) => {
                    refusals.push(e.to_string());
                    match offered.into_iter().find(|(pad, _)| pad == "src") {
                        Some((_, caps)) if caps != asked => asked = caps,
                        _ => break,
                    }
                }
            }
        }
    }
    if refusals.is_empty() {
        refusals.push(format!("it offers no video format ({formats:?})"));
    }
    Err(SourceError::Io(std::io::Error::other(format!(
        "libcamera {camera}: no picture: {}",
        refusals.join("; then ")
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_the_isp_for_both_pictures_exactly() {
        let (main, lores) = exact((1280, 720), 30.0, 320);
        let p = pipeline(Some("imx708"), &main, Some(&lores));
        assert_eq!(
            p,
            "libcamerasrc name=cam camera-name=\"imx708\" \
             cam.src ! video/x-raw,format=NV12,width=1280,height=720,framerate=30/1 ! appsink name=focusd \
             cam.src_0 ! video/x-raw,format=I420,width=320,height=180 ! appsink name=lores"
        );
        assert!(!pipeline(None, &main, None).contains("camera-name"));
        assert!(!pipeline(None, &main, None).contains("src_0"));
    }

    #[test]
    fn an_adjusted_mode_is_converted_and_scaled_to_what_was_asked() {
        let main = Ask::Adapted {
            from: "video/x-raw, format=(string)RGB, width=(int)636, height=(int)480, framerate=(fraction)30/1".into(),
            format: "NV12",
            size: (640, 480),
        };
        let p = pipeline(Some("platform/vimc.0 Sensor B"), &main, None);
        assert_eq!(
            p,
            "libcamerasrc name=cam camera-name=\"platform/vimc.0 Sensor B\" \
             cam.src ! capsfilter caps=\"video/x-raw, format=(string)RGB, width=(int)636, height=(int)480, framerate=(fraction)30/1\" \
             ! videoconvert ! videoscale ! video/x-raw,format=NV12,width=640,height=480 ! appsink name=focusd"
        );
        // The same branch after a test source parses, caps and all.
        gst::init().unwrap();
        let testable = p.replace(
            "libcamerasrc name=cam camera-name=\"platform/vimc.0 Sensor B\" cam.src !",
            "videotestsrc num-buffers=1 !",
        );
        gst::parse::launch(&testable).unwrap();
    }

    #[test]
    fn quotes_in_names_and_caps_cannot_end_the_string() {
        let (main, _) = exact((640, 480), 25.0, 320);
        assert!(
            pipeline(Some("a\" ! filesink location=x"), &main, None)
                .starts_with("libcamerasrc name=cam camera-name=\"a ! filesink location=x\" ")
        );
    }

    #[test]
    fn near_sizes_reach_an_eighth_down() {
        assert_eq!(
            near("RGB", (640, 360)),
            "video/x-raw,format=RGB,width=[560,640],height=[315,360]"
        );
        gst::init().unwrap();
        let caps: gst::Caps = near("RGB", (640, 360)).parse().unwrap();
        let rounded: gst::Caps = "video/x-raw,format=RGB,width=636,height=360"
            .parse()
            .unwrap();
        assert!(rounded.is_subset(&caps), "vimc's 636 is taken");
    }

    #[test]
    fn the_cheapest_format_to_convert_is_asked_for() {
        let f = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(cheapest_to_convert(&f(&["BGR", "RGB"])), Some("RGB"));
        assert_eq!(cheapest_to_convert(&f(&["RGB", "YUY2"])), Some("YUY2"));
        assert_eq!(cheapest_to_convert(&f(&["ARGB"])), Some("ARGB"));
        assert_eq!(cheapest_to_convert(&[]), None);
    }

    #[test]
    fn modes_read_fixed_sizes_and_ranges() {
        gst::init().unwrap();
        let caps: gst::Caps = "video/x-raw,format=NV12,width=1280,height=720; \
                               video/x-raw,format=NV12,width=1920,height=1080; \
                               video/x-raw,format=RGB,width=640,height=480; \
                               video/x-raw,format=RGB,width=[48,4096],height=[48,2160]"
            .parse()
            .unwrap();
        assert_eq!(
            modes(&caps),
            ["NV12 1280x720 1920x1080", "RGB 48x48-4096x2160"]
        );
    }
}
