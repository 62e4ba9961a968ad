//! Waiting for something a process does in its own time: one polling helper instead of a
//! loop in each test, with what was last seen in the failure.

use std::time::{Duration, Instant};

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(25);

/// Polls `check` until it holds, for at most `within`; panics naming `what` and what
/// `check` last saw when it never does. `check` returns what it saw as the error.
pub fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let end = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(saw) if Instant::now() >= end => panic!("{what}: not within {within:?}: {saw}"),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// `Ok` when `holds`, else what was seen: the usual body of an [`eventually`] check.
pub fn seen(holds: bool, saw: impl std::fmt::Debug) -> Result<(), String> {
    if holds {
        Ok(())
    } else {
        Err(format!("{saw:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_check_holds() {
        let mut n = 0;
        let got = eventually("three looks", Duration::from_secs(5), || {
            n += 1;
            if n == 3 {
                Ok(n)
            } else {
                Err(format!("n = {n}"))
            }
        });
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "never: not within 200ms: \"no\"")]
    fn names_what_it_waited_for_and_what_it_saw() {
        eventually("never", Duration::from_millis(200), || seen(false, "no"));
    }
}
