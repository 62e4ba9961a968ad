//! A one-item mailbox where the newest item wins: how capture hands frames to encoders and
//! the detector without ever waiting for them.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Holds at most one item; `put` replaces what is there.
#[derive(Debug)]
pub struct LatestSlot<T> {
    item: Mutex<Option<T>>,
    ready: Condvar,
}

impl<T> Default for LatestSlot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> LatestSlot<T> {
    pub fn new() -> Self {
        Self {
            item: Mutex::new(None),
            ready: Condvar::new(),
        }
    }

    /// Stores `item`; returns `true` if it replaced one nobody took (a dropped item).
    pub fn put(&self, item: T) -> bool {
        // The guarded value is an Option assignment: poisoning cannot leave it torn.
        let mut slot = self.item.lock().unwrap_or_else(|p| p.into_inner());
        let replaced = slot.replace(item).is_some();
        drop(slot);
        self.ready.notify_one();
        replaced
    }

    /// Takes the item, waiting up to `timeout` for one.
    pub fn take_timeout(&self, timeout: Duration) -> Option<T> {
        let slot = self.item.lock().unwrap_or_else(|p| p.into_inner());
        let (mut slot, _) = self
            .ready
            .wait_timeout_while(slot, timeout, |s| s.is_none())
            .unwrap_or_else(|p| p.into_inner());
        slot.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_wins_and_replacement_is_reported() {
        let slot = LatestSlot::new();
        assert!(!slot.put(1));
        assert!(slot.put(2));
        assert_eq!(slot.take_timeout(Duration::ZERO), Some(2));
        assert_eq!(slot.take_timeout(Duration::from_millis(5)), None);
    }

    #[test]
    fn take_wakes_on_put() {
        let slot = std::sync::Arc::new(LatestSlot::new());
        let s2 = slot.clone();
        let t = std::thread::spawn(move || s2.take_timeout(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        slot.put(7);
        assert_eq!(t.join().unwrap(), Some(7));
    }
}
