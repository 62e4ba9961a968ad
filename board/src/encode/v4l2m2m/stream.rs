//! The encoder contract's pipelining over an [`M2mSession`], for any coded format:
//! pictures go in with their capture times, coded units come out paired with them, oldest
//! first; `submit` waits up to a frame interval for its own unit; `finish` drains.
//!
//! A picture the driver never returns (rate control skipped it) is passed over when a
//! later one comes back. A unit whose id was never queued means the driver lost track of
//! its buffers: the stream cannot go on.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::session::{M2mError, M2mSession};
use crate::encode::{EncodeError, EncodedUnit};
use crate::frame::CaptureTime;
use crate::image::Image;

/// How long `finish` waits for the drain to end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// An error of the device while running: the encoder cannot go on.
fn device_error(e: M2mError) -> EncodeError {
    EncodeError::Device(e.to_string())
}

/// Pictures in, paired coded units out; see the [module docs](self).
pub struct M2mStream {
    session: M2mSession,
    /// How long `submit` waits for its unit, and for a free raw buffer.
    interval: Duration,
    /// Whether a unit starts a GOP, besides the driver's keyframe flag (for H.264: an IDR
    /// slice in it).
    is_keyframe: fn(&[u8]) -> bool,
    /// The id the next picture is queued under (ids ride in buffer timestamps).
    next_id: u64,
    /// Capture times of pictures on the device, by id, oldest first.
    in_flight: VecDeque<(u64, CaptureTime)>,
    /// Units `poll` has not taken yet.
    ready: VecDeque<(EncodedUnit, Vec<u8>)>,
    /// Set by `finish`.
    finished: bool,
}

impl std::fmt::Debug for M2mStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("M2mStream")
            .field("session", &self.session)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl M2mStream {
    /// Streams over `session` at `fps`; `is_keyframe` recognises a unit that starts a GOP
    /// when the driver does not flag it.
    pub fn new(session: M2mSession, fps: f64, is_keyframe: fn(&[u8]) -> bool) -> Self {
        Self {
            session,
            interval: Duration::from_secs_f64(1.0 / fps.max(1.0)),
            is_keyframe,
            next_id: 1,
            in_flight: VecDeque::new(),
            ready: VecDeque::new(),
            finished: false,
        }
    }

    pub fn session(&self) -> &M2mSession {
        &self.session
    }

    /// Whether `finish` was called.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Pictures on the device whose unit has not come back.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Queues `image`, then waits up to a frame interval for its unit. `before_queue` runs
    /// just before the picture is queued (a keyframe request that must apply to it).
    /// A device with no free raw buffer after a frame interval loses this picture
    /// (recoverable).
    pub fn submit(
        &mut self,
        image: &Image,
        captured: CaptureTime,
        before_queue: impl FnOnce(&M2mSession) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        let busy = || EncodeError::Frame("the encoder is still busy with earlier pictures".into());
        if self.finished {
            return Err(EncodeError::Finished);
        }
        if !self
            .session
            .wait_for_output(self.interval)
            .map_err(device_error)?
        {
            self.collect()?;
            return Err(busy());
        }
        before_queue(&self.session)?;
        let id = self.next_id;
        self.next_id += 1;
        if !self
            .session
            .queue_picture(image, id)
            .map_err(device_error)?
        {
            return Err(busy());
        }
        self.in_flight.push_back((id, captured));
        let deadline = Instant::now() + self.interval;
        loop {
            if self.collect()?.is_some_and(|newest| newest >= id) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.session.wait_for_coded(left).map_err(device_error)? {
                return Ok(());
            }
        }
    }

    /// Takes the oldest finished unit, appending its bytes to `out`; never waits.
    pub fn poll(&mut self, out: &mut Vec<u8>) -> Result<Option<EncodedUnit>, EncodeError> {
        if self.ready.is_empty() && !self.finished {
            self.collect()?;
        }
        Ok(self.ready.pop_front().map(|(unit, bytes)| {
            out.extend_from_slice(&bytes);
            unit
        }))
    }

    /// Drains the device: every unit still in flight, oldest first, into `out`.
    pub fn finish(&mut self, out: &mut Vec<(EncodedUnit, Vec<u8>)>) -> Result<(), EncodeError> {
        if self.finished {
            return Err(EncodeError::Finished);
        }
        self.finished = true;
        self.session.drain().map_err(device_error)?;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while !self.session.is_drained() {
            self.collect()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(EncodeError::Device(format!(
                    "the encoder did not finish its drain within {DRAIN_TIMEOUT:?}"
                )));
            }
            self.session.wait_for_coded(left).map_err(device_error)?;
        }
        self.collect()?;
        out.extend(self.ready.drain(..));
        Ok(())
    }

    /// Moves every finished coded buffer to `ready`; the id of the newest one.
    fn collect(&mut self) -> Result<Option<u64>, EncodeError> {
        let mut newest = None;
        loop {
            let mut bytes = Vec::new();
            let Some(coded) = self
                .session
                .dequeue_coded(&mut bytes)
                .map_err(device_error)?
            else {
                return Ok(newest);
            };
            // The empty buffer that ends a drain carries no picture.
            if bytes.is_empty() && !coded.error {
                continue;
            }
            newest = Some(coded.id);
            // Pictures before this one that never came out were skipped by rate control.
            while self.in_flight.front().is_some_and(|&(id, _)| id < coded.id) {
                self.in_flight.pop_front();
            }
            let captured = match self.in_flight.pop_front() {
                Some((id, captured)) if id == coded.id => captured,
                _ => {
                    return Err(EncodeError::Device(format!(
                        "the encoder returned a picture that was never queued (id {})",
                        coded.id
                    )));
                }
            };
            if coded.error {
                return Err(EncodeError::Frame(
                    "the encoder marked an access unit as failed".into(),
                ));
            }
            let keyframe = coded.keyframe || (self.is_keyframe)(&bytes);
            let unit = EncodedUnit {
                keyframe,
                captured,
                temporal_layer: 0,
            };
            self.ready.push_back((unit, bytes));
        }
    }
}
