//! One track as an RTP stream (sans-IO): encoded frames in, RTP packets out; RTCP sender
//! reports out, keyframe requests (PLI/FIR) in. No clock and no socket: the caller passes
//! the time and sends the bytes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtcp::sender_report::SenderReport;
use rtp::codecs::h264::H264Payloader;
use rtp::header::Header;
use rtp::packet::Packet;
use rtp::packetizer::Payloader;
use webrtc_util::marshal::Marshal;

use crate::track::EncodedFrame;

/// Largest RTP packet sent (header included): fits a 1500-byte Ethernet MTU with IPv6,
/// UDP and a VPN's overhead, as browsers do.
pub const MTU: usize = 1200;

/// The RTP payload type: the relay maps it to H.264 in its own SDP (Janus: `pt = 96`).
pub const PAYLOAD_TYPE: u8 = 96;

/// 90 kHz, the RTP clock of video.
const CLOCK_HZ: u64 = 90_000;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// An RTP sender for one track.
#[derive(Debug)]
pub struct RtpStream {
    ssrc: u32,
    /// Capture time that RTP timestamp `timestamp_offset` stands for.
    epoch: Instant,
    /// A random start, as RFC 3550 asks, so that streams cannot be told apart by it.
    timestamp_offset: u32,
    sequence: u16,
    payloader: H264Payloader,
    /// Whether a keyframe must come before anything is sent (at start): a decoder cannot
    /// start on a P-frame. Frames lost before they reach the stream are lost to the
    /// viewers too, and the encoder makes its next one a keyframe.
    awaiting_keyframe: bool,
    packets: u32,
    octets: u32,
}

impl RtpStream {
    /// A stream with these random values (SSRC, first sequence number, timestamp offset),
    /// whose timestamps count from `epoch`.
    pub fn new(ssrc: u32, sequence: u16, timestamp_offset: u32, epoch: Instant) -> Self {
        Self {
            ssrc,
            epoch,
            timestamp_offset,
            sequence,
            payloader: H264Payloader::default(),
            awaiting_keyframe: true,
            packets: 0,
            octets: 0,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    fn timestamp(&self, at: Instant) -> u32 {
        let ticks =
            at.saturating_duration_since(self.epoch).as_micros() as u64 * CLOCK_HZ / 1_000_000;
        // RTP timestamps wrap by design (RFC 3550 §5.1).
        self.timestamp_offset.wrapping_add(ticks as u32)
    }

    /// The RTP packets of one frame (its SPS and PPS aggregated into a STAP-A before the
    /// IDR, large NAL units split into FU-A), or none while waiting for a keyframe.
    pub fn packetize(&mut self, frame: &EncodedFrame) -> Vec<Bytes> {
        if self.awaiting_keyframe && !frame.keyframe {
            return Vec::new();
        }
        // The payloader slices the frame's own buffer, shared, not copied.
        let data = Bytes::from_owner(frame.data.clone());
        let payloads = match self.payloader.payload(MTU - 12, &data) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "frame not packetized");
                return Vec::new();
            }
        };
        self.awaiting_keyframe = false;
        let timestamp = self.timestamp(frame.captured_at);
        let last = payloads.len().saturating_sub(1);
        let mut out = Vec::with_capacity(payloads.len());
        for (i, payload) in payloads.into_iter().enumerate() {
            let packet = Packet {
                header: Header {
                    version: 2,
                    // The end of the frame: the receiver may decode it now.
                    marker: i == last,
                    payload_type: PAYLOAD_TYPE,
                    sequence_number: self.sequence,
                    timestamp,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload,
            };
            self.sequence = self.sequence.wrapping_add(1);
            match packet.marshal() {
                Ok(bytes) => {
                    self.packets = self.packets.wrapping_add(1);
                    self.octets = self.octets.wrapping_add(packet.payload.len() as u32);
                    out.push(bytes);
                }
                Err(e) => tracing::debug!(error = %e, "RTP packet not written"),
            }
        }
        out
    }

    /// An RTCP sender report for `now` (`wall` is the same instant on the system clock):
    /// it ties the RTP timestamps to wall time and, sent to the relay's RTCP port, tells
    /// the relay where to send its keyframe requests.
    pub fn sender_report(&self, now: Instant, wall: SystemTime) -> Option<Bytes> {
        let since_unix = wall.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let ntp_seconds = since_unix.as_secs() + NTP_UNIX_OFFSET_S;
        let ntp_fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
        SenderReport {
            ssrc: self.ssrc,
            ntp_time: (ntp_seconds << 32) | ntp_fraction,
            rtp_time: self.timestamp(now),
            packet_count: self.packets,
            octet_count: self.octets,
            ..Default::default()
        }
        .marshal()
        .ok()
    }

    /// Whether an RTCP datagram from the relay asks this stream for a keyframe (a PLI or
    /// FIR for its SSRC; a compound packet is read whole). Anything else is ignored.
    pub fn wants_keyframe(&self, datagram: &[u8]) -> bool {
        let mut buf = datagram;
        let Ok(packets) = rtcp::packet::unmarshal(&mut buf) else {
            return false;
        };
        packets.iter().any(|p| {
            let any = p.as_any();
            any.downcast_ref::<PictureLossIndication>()
                .is_some_and(|pli| pli.media_ssrc == self.ssrc)
                || any
                    .downcast_ref::<FullIntraRequest>()
                    .is_some_and(|fir| fir.fir.iter().any(|e| e.ssrc == self.ssrc))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rtp::packetizer::Depacketizer;
    use webrtc_util::marshal::Unmarshal;

    use super::*;
    use crate::track::Track;

    fn frame(data: Vec<u8>, keyframe: bool, at: Instant) -> EncodedFrame {
        EncodedFrame {
            track: Track::Source,
            data: Arc::from(data),
            keyframe,
            captured_at: at,
            temporal_layer: 0,
        }
    }

    /// SPS, PPS and an IDR slice of `idr_len` bytes, in Annex B.
    fn keyframe_units(idr_len: usize) -> Vec<u8> {
        let mut v = vec![
            0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80,
        ];
        v.extend([0, 0, 0, 1, 0x65]);
        v.extend((0..idr_len).map(|i| (i % 251) as u8 | 1));
        v
    }

    #[test]
    fn a_keyframe_comes_back_whole_from_its_packets() {
        let t0 = Instant::now();
        let mut s = RtpStream::new(0x1234, 65530, 1000, t0);
        let data = keyframe_units(5000);
        let packets = s.packetize(&frame(data.clone(), true, t0 + Duration::from_millis(100)));
        assert!(packets.len() >= 5, "split into FU-A: {}", packets.len());
        let mut depacketizer = rtp::codecs::h264::H264Packet::default();
        let mut rebuilt = Vec::new();
        for (i, raw) in packets.iter().enumerate() {
            assert!(raw.len() <= MTU);
            let p = Packet::unmarshal(&mut raw.clone()).expect("a valid RTP packet");
            assert_eq!(p.header.ssrc, 0x1234);
            assert_eq!(p.header.payload_type, PAYLOAD_TYPE);
            assert_eq!(p.header.timestamp, 1000 + 9000, "100 ms at 90 kHz");
            assert_eq!(p.header.sequence_number, 65530u16.wrapping_add(i as u16));
            assert_eq!(p.header.marker, i + 1 == packets.len());
            rebuilt.extend_from_slice(&depacketizer.depacketize(&p.payload).expect("depacketizes"));
        }
        // The depacketizer writes each NAL unit with a 4-byte start code.
        assert_eq!(rebuilt, data);
    }

    #[test]
    fn nothing_is_sent_before_a_keyframe() {
        let t0 = Instant::now();
        let mut s = RtpStream::new(1, 0, 0, t0);
        let p_frame = frame(vec![0, 0, 0, 1, 0x41, 1, 2, 3], false, t0);
        assert!(s.packetize(&p_frame).is_empty());
        assert!(!s.packetize(&frame(keyframe_units(10), true, t0)).is_empty());
        assert_eq!(s.packetize(&p_frame).len(), 1);
    }

    #[test]
    fn reads_keyframe_requests_for_its_own_ssrc_only() {
        let s = RtpStream::new(77, 0, 0, Instant::now());
        let pli = |media_ssrc| {
            PictureLossIndication {
                sender_ssrc: 1,
                media_ssrc,
            }
            .marshal()
            .unwrap()
        };
        assert!(s.wants_keyframe(&pli(77)));
        assert!(!s.wants_keyframe(&pli(78)));
        let fir = FullIntraRequest {
            sender_ssrc: 1,
            media_ssrc: 0,
            fir: vec![rtcp::payload_feedbacks::full_intra_request::FirEntry {
                ssrc: 77,
                sequence_number: 1,
            }],
        }
        .marshal()
        .unwrap();
        assert!(s.wants_keyframe(&fir));
        // A receiver report in front (a compound packet), then the PLI.
        let rr = rtcp::receiver_report::ReceiverReport {
            ssrc: 1,
            ..Default::default()
        }
        .marshal()
        .unwrap();
        assert!(s.wants_keyframe(&[rr.as_ref(), pli(77).as_ref()].concat()));
        assert!(!s.wants_keyframe(b"not rtcp at all"));
        assert!(!s.wants_keyframe(&[]));
    }

    #[test]
    fn sender_report_ties_rtp_time_to_wall_time() {
        let t0 = Instant::now();
        let mut s = RtpStream::new(9, 0, 500, t0);
        s.packetize(&frame(keyframe_units(100), true, t0));
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(500);
        let raw = s
            .sender_report(t0 + Duration::from_secs(1), wall)
            .expect("a report");
        let sr = SenderReport::unmarshal(&mut raw.clone()).expect("parses");
        assert_eq!(sr.ssrc, 9);
        assert_eq!(sr.rtp_time, 500 + 90_000);
        assert_eq!(sr.ntp_time >> 32, 1_700_000_000 + NTP_UNIX_OFFSET_S);
        assert_eq!(sr.ntp_time & 0xffff_ffff, 1 << 31, "half a second");
        assert_eq!(
            sr.packet_count, 2,
            "a STAP-A of SPS and PPS, then the IDR slice"
        );
    }
}
