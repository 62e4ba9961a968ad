//! Supervision of the daemon's long-running tasks (the WebRTC server, HTTP, MQTT, the
//! relay, WHIP, the RTSP feeders, the rates): a task that panics is restarted, not lost.
//!
//! Before supervision, one panic inside str0m's ICE agent ended the task that ran every
//! viewer's session: from then on no viewer could connect, and nothing said so. Now a
//! panic is
//! * logged with its message (the panic hook has printed where it happened),
//! * counted in `focusd_task_panics_total{task}`,
//! * a fault of its [`Part`] in the state and `/healthz` (503) until the restarted task
//!   has run for [`HEALTHY_AFTER`],
//! * and the task is run again after a backoff (0.1 s doubling to 5 s; reset once a run
//!   lasted [`HEALTHY_AFTER`]), from what [`Supervised::reset`] left of it.
//!
//! A run holds its task by `&mut`: what the task owns (its sockets, the receiving ends of
//! its queues) outlives a panic, so the queues that feed it keep their consumer and stay
//! bounded. What a run built for itself (a hub's sessions, an MQTT connection) goes with
//! the panic; the peers reconnect as after a network loss.
//!
//! A test hook, `FOCUSD_TEST_PANIC=PART@SECONDS[,PART@SECONDS...]` (e.g. `webrtc@3`),
//! makes the first run of each named task panic that long after it started, so the tests
//! can check all of the above on the real binary.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::service::metrics::Metrics;
use crate::state::{Control, Part};

/// How long a restarted task must run before its fault clears and its backoff resets.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// The first wait before a restart, and the longest.
const RESTART_MIN: Duration = Duration::from_millis(100);
const RESTART_MAX: Duration = Duration::from_secs(5);

/// The environment variable of the test hook.
pub const TEST_PANIC_VAR: &str = "FOCUSD_TEST_PANIC";

/// A task the [`Supervisor`] runs and restarts.
///
/// Called on the tokio runtime; [`Supervised::run`] may await anything, and must return
/// soon after `shutdown` is cancelled.
pub trait Supervised: Send + 'static {
    /// Which part of the daemon this is, in faults, logs and metrics.
    fn part(&self) -> Part;

    /// One run, until `shutdown` is cancelled. A run that returns ends the task (it has
    /// nothing more to do); one that panics is started again.
    fn run(&mut self, shutdown: CancellationToken) -> impl Future<Output = ()> + Send + '_;

    /// Called after a run panicked, before the next: throw away what the panic may have
    /// left half-done. The default keeps everything.
    fn reset(&mut self) {}
}

/// Starts supervised tasks; cheap to clone.
#[derive(Clone, Debug)]
pub struct Supervisor {
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    /// The test hook's injected panics: which part, how long into its first run.
    injected: Arc<Vec<(Part, Duration)>>,
}

impl Supervisor {
    /// A supervisor that reports to `control` and `metrics`, with the test hook read from
    /// [`TEST_PANIC_VAR`] (a malformed value is warned about and ignored).
    pub fn new(control: Arc<Control>, metrics: Arc<Metrics>) -> Supervisor {
        let injected = match std::env::var(TEST_PANIC_VAR) {
            Ok(v) => parse_injected(&v).unwrap_or_else(|e| {
                tracing::warn!("{TEST_PANIC_VAR}: {e}; no panic is injected");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Supervisor {
            control,
            metrics,
            injected: Arc::new(injected),
        }
    }

    /// Runs `task` on `tracker` until `shutdown`, restarting it whenever a run panics.
    pub fn spawn<T: Supervised>(
        &self,
        tracker: &TaskTracker,
        task: T,
        shutdown: CancellationToken,
    ) {
        let me = self.clone();
        tracker.spawn(async move { me.supervise(task, shutdown).await });
    }

    async fn supervise<T: Supervised>(self, mut task: T, shutdown: CancellationToken) {
        let part = task.part();
        let mut backoff = Backoff::new(RESTART_MIN, RESTART_MAX);
        let mut inject = self
            .injected
            .iter()
            .find(|(p, _)| *p == part)
            .map(|(_, after)| *after);
        let mut faulted = false;
        loop {
            let started = Instant::now();
            let panicked = {
                let injected = inject.take();
                let run = async {
                    match injected {
                        None => task.run(shutdown.clone()).await,
                        Some(after) => tokio::select! {
                            () = task.run(shutdown.clone()) => {}
                            () = tokio::time::sleep(after) => {
                                panic!("{TEST_PANIC_VAR}: injected panic in the {} task", part.name())
                            }
                        },
                    }
                };
                let mut run = std::pin::pin!(AssertUnwindSafe(run).catch_unwind());
                // While it runs: the fault of an earlier panic clears once it has lasted.
                loop {
                    let healthy = started + HEALTHY_AFTER;
                    tokio::select! {
                        r = &mut run => break r.err(),
                        () = tokio::time::sleep_until(healthy), if faulted => {
                            faulted = false;
                            backoff.reset();
                            self.control.recovered(part);
                            tracing::info!(task = part.name(), "running again since its restart");
                        }
                    }
                }
            };
            let Some(panic) = panicked else {
                if faulted {
                    self.control.recovered(part);
                }
                return;
            };
            let why = panic_message(panic.as_ref());
            self.metrics.task_panics[part.index()].inc();
            self.control
                .fault(part, format!("the task panicked and was restarted: {why}"));
            faulted = true;
            task.reset();
            let wait = backoff.next(getrandom::u64().unwrap_or(0));
            tracing::error!(
                task = part.name(),
                restart_in_ms = wait.as_millis() as u64,
                "task panicked: {why}; restarting"
            );
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.control.recovered(part);
                    return;
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The message a panic was raised with (`panic!("...")` gives a `&str` or a `String`).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// `PART@SECONDS[,PART@SECONDS...]`.
fn parse_injected(value: &str) -> Result<Vec<(Part, Duration)>, String> {
    value
        .split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| {
            let (name, secs) = item
                .trim()
                .split_once('@')
                .ok_or_else(|| format!("`{item}` is not PART@SECONDS"))?;
            let part = Part::from_name(name)
                .filter(|p| Part::TASKS.contains(p))
                .ok_or_else(|| {
                    let tasks: Vec<&str> = Part::TASKS.iter().map(|p| p.name()).collect();
                    format!("`{name}` is not a task ({})", tasks.join(", "))
                })?;
            let secs: f64 = secs
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && (0.0..=3600.0).contains(s))
                .ok_or_else(|| format!("`{secs}` is not 0 to 3600 seconds"))?;
            Ok((part, Duration::from_secs_f64(secs)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Panics on its first `panics` runs, then runs until shutdown; counts runs and resets.
    struct Flaky {
        panics: u32,
        runs: Arc<AtomicU32>,
        resets: Arc<AtomicU32>,
    }

    impl Supervised for Flaky {
        fn part(&self) -> Part {
            Part::Webrtc
        }
        async fn run(&mut self, shutdown: CancellationToken) {
            let run = self.runs.fetch_add(1, Ordering::SeqCst);
            if run < self.panics {
                panic!("run {run} fails");
            }
            shutdown.cancelled().await;
        }
        fn reset(&mut self) {
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn supervisor() -> Supervisor {
        Supervisor {
            control: Arc::new(Control::new(
                crate::state::command::Mode::High,
                None,
                String::new(),
                String::new(),
            )),
            metrics: Arc::new(Metrics::default()),
            injected: Arc::new(Vec::new()),
        }
    }

    /// In virtual time: two panics, two restarts after a backoff, a fault while it
    /// settles, cleared after [`HEALTHY_AFTER`]; shutdown ends it.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_counted_reported_and_restarted() {
        let s = supervisor();
        let (runs, resets) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let task = Flaky {
            panics: 2,
            runs: runs.clone(),
            resets: resets.clone(),
        };
        s.spawn(&tracker, task, shutdown.clone());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "two restarts within a second"
        );
        assert_eq!(resets.load(Ordering::SeqCst), 2);
        assert_eq!(s.metrics.task_panics[Part::Webrtc.index()].get(), 2);
        let faults = s.control.snapshot().faults;
        assert_eq!(faults.len(), 1, "{faults:?}");
        assert_eq!(faults[0].part, Part::Webrtc);
        assert_eq!(faults[0].failures, 2);
        assert!(
            faults[0].error.contains("run 1 fails"),
            "{}",
            faults[0].error
        );
        let text = s.metrics.render(&s.control.snapshot());
        assert!(text.contains("focusd_task_panics_total{task=\"webrtc\"} 2"));
        tokio::time::sleep(HEALTHY_AFTER).await;
        assert!(
            s.control.snapshot().faults.is_empty(),
            "cleared once it ran"
        );
        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(1), tracker.wait())
            .await
            .expect("ends at shutdown");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    /// A task that keeps panicking is restarted at most every [`RESTART_MAX`].
    #[tokio::test(start_paused = true)]
    async fn restarts_back_off_to_a_cap() {
        let s = supervisor();
        let runs = Arc::new(AtomicU32::new(0));
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let task = Flaky {
            panics: u32::MAX,
            runs: runs.clone(),
            resets: Arc::new(AtomicU32::new(0)),
        };
        s.spawn(&tracker, task, shutdown.clone());
        tokio::time::sleep(Duration::from_secs(60)).await;
        let n = runs.load(Ordering::SeqCst);
        // 0.05..0.1, ..0.2, ..0.4, ..0.8, ..1.6, ..3.2, then 2.5..5 s each.
        assert!((12..=30).contains(&n), "{n} runs in a minute");
        shutdown.cancel();
    }

    #[test]
    fn the_test_hook_names_tasks_and_seconds() {
        assert_eq!(
            parse_injected("webrtc@3, http@0.5").unwrap(),
            vec![
                (Part::Webrtc, Duration::from_secs(3)),
                (Part::Http, Duration::from_millis(500))
            ]
        );
        assert!(
            parse_injected("source@1")
                .unwrap_err()
                .contains("not a task")
        );
        assert!(
            parse_injected("webrtc")
                .unwrap_err()
                .contains("PART@SECONDS")
        );
        assert!(parse_injected("webrtc@-1").unwrap_err().contains("seconds"));
        assert_eq!(parse_injected("").unwrap(), vec![]);
    }
}
