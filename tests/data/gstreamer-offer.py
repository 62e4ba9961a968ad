# A GStreamer webrtcbin offer as a viewer makes it: two recvonly H.264 videos, its
# candidates gathered. Made tests/data/gstreamer-offer.sdp (Debian 12's GStreamer 1.22,
# gstreamer1.0-nice, gir1.2-gst-plugins-bad-1.0), the host's addresses then replaced by
# loopback ones: /usr/bin/python3 tests/data/gstreamer-offer.py
import gi, time
gi.require_version("Gst", "1.0"); gi.require_version("GstWebRTC", "1.0"); gi.require_version("GstSdp", "1.0")
from gi.repository import Gst, GstWebRTC, GstSdp, GLib
Gst.init(None)
pipe = Gst.Pipeline.new("p")
w = Gst.ElementFactory.make("webrtcbin", "w")
w.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
pipe.add(w)
caps = Gst.Caps.from_string("application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000,packetization-mode=(string)1,profile-level-id=(string)42e01f")
for _ in range(2):
    w.emit("add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY, caps)
pipe.set_state(Gst.State.PLAYING)
# (No DataChannel: webrtcbin needs the SCTP plugin for one, and GStreamer viewers often go without.)
p = Gst.Promise.new()
w.emit("create-offer", None, p)
p.wait()
offer = p.get_reply().get_value("offer")
p = Gst.Promise.new()
w.emit("set-local-description", offer, p)
p.wait()
ctx = GLib.MainContext.default()
end = time.time() + 3
while time.time() < end and w.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
    ctx.iteration(False); time.sleep(0.05)
print(w.get_property("local-description").sdp.as_text(), end="")
pipe.set_state(Gst.State.NULL)
