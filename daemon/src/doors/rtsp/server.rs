//! GStreamer's RTSP server on a GLib main loop of its own thread, one shared media per
//! track, each fed by a supervised tokio task from the track's tap.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app::AppSrc;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_rtsp_server::{RTSPMedia, RTSPMediaFactory, RTSPServer};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{RtspDoor, RtspError};
use crate::doors::http::auth::Gate;
use crate::service::supervisor::Supervised;
use crate::state::{Control, Part};
use crate::track::Track;

/// Each track's pipeline: the encoded access units in, RTP out. `h264parse` puts SPS and
/// PPS where a client needs them; the payloader repeats them before every keyframe.
const LAUNCH: &str = "( appsrc name=src is-live=true format=time do-timestamp=true \
     caps=video/x-h264,stream-format=byte-stream,alignment=au \
     ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )";

pub(super) fn start(door: RtspDoor, shutdown: CancellationToken) -> Result<SocketAddr, RtspError> {
    gst::init().map_err(|e| RtspError::Setup(e.to_string()))?;
    let server = RTSPServer::new();
    server.set_address(&door.addr.ip().to_string());
    server.set_service(&door.addr.port().to_string());
    // Always there: it checks the token (when access control is on) and whether the
    // door is open.
    let auth = TokenAuth::new(door.gate.clone(), door.control.clone());
    server.set_auth(Some(&auth));
    let mounts = server
        .mount_points()
        .ok_or_else(|| RtspError::Setup("the server has no mount points".into()))?;
    let runtime = tokio::runtime::Handle::current();
    let door = Arc::new(door);
    for track in Track::ALL {
        let factory = RTSPMediaFactory::new();
        factory.set_launch(LAUNCH);
        factory.set_shared(true);
        let (door, runtime, shutdown) = (door.clone(), runtime.clone(), shutdown.clone());
        factory.connect_media_configure(move |_, media| {
            configure(media, track, &door, &runtime, &shutdown);
        });
        mounts.add_factory(&format!("/{}", track.name()), factory);
    }
    let context = glib::MainContext::new();
    let source = server
        .attach(Some(&context))
        .map_err(|e| RtspError::Listen {
            addr: door.addr,
            reason: e.to_string(),
        })?;
    let addr = SocketAddr::new(door.addr.ip(), server.bound_port() as u16);
    let main_loop = glib::MainLoop::new(Some(&context), false);
    let quit = main_loop.clone();
    std::thread::Builder::new()
        .name("focusd-rtsp".into())
        .spawn(move || {
            let ran = context.with_thread_default(|| main_loop.run());
            if let Err(e) = ran {
                tracing::warn!(error = %e, "the RTSP server's loop could not run");
            }
            // The source is in this loop's context, not the default one.
            if let Some(s) = context.find_source_by_id(&source) {
                s.destroy();
            }
            drop(server);
        })
        .map_err(|e| RtspError::Setup(format!("cannot start its thread: {e}")))?;
    runtime.spawn(async move {
        shutdown.cancelled().await;
        quit.quit();
    });
    tracing::info!(%addr, "RTSP serving /source and /context");
    Ok(addr)
}

/// A track's shared media was made (its first client): feeds it until it is torn down.
fn configure(
    media: &RTSPMedia,
    track: Track,
    door: &Arc<RtspDoor>,
    runtime: &tokio::runtime::Handle,
    shutdown: &CancellationToken,
) {
    let Some(appsrc) = media
        .element()
        .downcast::<gst::Bin>()
        .ok()
        .and_then(|bin| bin.by_name("src"))
        .and_then(|e| e.downcast::<AppSrc>().ok())
    else {
        tracing::warn!(track = track.name(), "RTSP media without its appsrc");
        return;
    };
    // Live: a client that cannot keep up loses the oldest frames, never the newest.
    appsrc.set_property("max-buffers", 30u64);
    appsrc.set_property_from_str("leaky-type", "downstream");
    let done = shutdown.child_token();
    let on_unprepared = done.clone();
    media.connect_unprepared(move |_| on_unprepared.cancel());
    let feeder = Feeder {
        track,
        door: door.clone(),
        appsrc,
    };
    // The tracker and the supervisor belong to the runtime: enter it from GLib's thread.
    let _entered = runtime.enter();
    door.supervisor.spawn(&door.tracker, feeder, done);
}

/// Feeds one track's shared media from its tap, until the media goes (`done`).
struct Feeder {
    track: Track,
    door: Arc<RtspDoor>,
    appsrc: AppSrc,
}

impl Supervised for Feeder {
    fn part(&self) -> Part {
        Part::Rtsp
    }

    fn run(
        &mut self,
        done: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        feed(self.track, &self.door, &self.appsrc, done)
    }
}

async fn feed(track: Track, door: &RtspDoor, appsrc: &AppSrc, done: CancellationToken) {
    let _claim = door.demand.claim(track);
    let mut frames = door.taps.subscribe(track);
    door.keyframes[track].request(Instant::now());
    let mut awaiting_keyframe = true;
    tracing::debug!(track = track.name(), "RTSP media started");
    loop {
        let frame = tokio::select! {
            _ = done.cancelled() => break,
            f = frames.recv() => f,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(RecvError::Lagged(n)) => {
                tracing::debug!(
                    track = track.name(),
                    lost = n,
                    "RTSP fell behind; waiting for a keyframe"
                );
                awaiting_keyframe = true;
                door.keyframes[track].request(Instant::now());
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        if !door.control.streams().rtsp.enabled {
            // Closed: the clients are told the stream ended.
            let _ = appsrc.end_of_stream();
            break;
        }
        if awaiting_keyframe && !frame.keyframe {
            continue;
        }
        awaiting_keyframe = false;
        let mut buffer = gst::Buffer::from_slice(frame.data.clone());
        if !frame.keyframe
            && let Some(b) = buffer.get_mut()
        {
            b.set_flags(gst::BufferFlags::DELTA_UNIT);
        }
        // Flushing or end of stream: the media is going away.
        if appsrc.push_buffer(buffer).is_err() {
            break;
        }
    }
    tracing::debug!(track = track.name(), "RTSP media ended");
}

/// Access for RTSP: while the door is open, Basic credentials with any user name and an
/// access token as the password open the media (anyone, with access control off);
/// without them a client is answered 401 with a Basic challenge (and retries with its
/// credentials); while the door is closed, 503.
mod auth {
    use std::sync::{Arc, OnceLock};

    use gstreamer::glib;
    use gstreamer_rtsp::{RTSPAuthMethod, RTSPHeaderField, RTSPStatusCode};
    use gstreamer_rtsp_server::RTSPContext;
    use gstreamer_rtsp_server::prelude::*;
    use gstreamer_rtsp_server::subclass::prelude::*;

    use crate::doors::http::auth::Gate;
    use crate::state::Control;

    #[derive(Default)]
    pub struct TokenAuth {
        /// Who may watch; set once, right after the object is made.
        pub(super) gate: OnceLock<Arc<Gate>>,
        /// Whether the door is open; set with `gate`.
        pub(super) control: OnceLock<Arc<Control>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for TokenAuth {
        const NAME: &'static str = "FocusdTokenAuth";
        type Type = super::TokenAuth;
        type ParentType = gstreamer_rtsp_server::RTSPAuth;
    }

    impl ObjectImpl for TokenAuth {}

    impl RTSPAuthImpl for TokenAuth {
        fn authenticate(&self, ctx: &RTSPContext) -> bool {
            let (Some(gate), Some(request)) = (self.gate.get(), ctx.request()) else {
                return false;
            };
            if !gate.enabled() {
                return true;
            }
            request.parse_auth_credentials().iter().any(|c| {
                c.scheme() == RTSPAuthMethod::Basic
                    && c.authorization()
                        .is_some_and(|a| super::basic_grants(gate, a))
            })
        }

        fn check(&self, ctx: &RTSPContext, check: &glib::GString) -> bool {
            // Only opening a media needs the door open and the token (DESCRIBE, SETUP).
            if !check.starts_with("auth.check.media.factory") {
                return true;
            }
            let open = self.control.get().is_some_and(|c| c.streams().rtsp.enabled);
            let status = if !open {
                RTSPStatusCode::ServiceUnavailable
            } else if self.authenticate(ctx) {
                return true;
            } else {
                RTSPStatusCode::Unauthorized
            };
            if let (Some(response), Some(client)) = (ctx.response(), ctx.client()) {
                response.init_response(status, ctx.request());
                if status == RTSPStatusCode::Unauthorized {
                    response.add_header(RTSPHeaderField::WwwAuthenticate, "Basic realm=\"focusd\"");
                }
                client.send_message(response, ctx.session());
            }
            false
        }
    }
}

glib::wrapper! {
    /// The RTSP server's access check (see the `auth` module).
    pub struct TokenAuth(ObjectSubclass<auth::TokenAuth>)
        @extends gstreamer_rtsp_server::RTSPAuth;
}

impl TokenAuth {
    fn new(gate: Arc<Gate>, control: Arc<Control>) -> TokenAuth {
        use gstreamer::glib::subclass::prelude::ObjectSubclassIsExt;
        let auth: TokenAuth = glib::Object::new();
        // Just made: nothing set them before.
        let _ = auth.imp().gate.set(gate);
        let _ = auth.imp().control.set(control);
        auth
    }
}

/// Whether a Basic `Authorization` value (base64 of `user:password`) has an access token
/// of `gate` as its password; any user name is accepted.
fn basic_grants(gate: &Gate, authorization: &str) -> bool {
    use base64::Engine;
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(authorization.trim()) else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(&decoded) else {
        return false;
    };
    text.split_once(':')
        .is_some_and(|(_, password)| gate.grants(password).is_some())
}
