//! The `focusd` binary: parse flags, resolve settings, run until a signal.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use focusd::cli::ctl::CtlError;
use focusd::config::{Flags, Settings, Subcmd};
use focusd::service::sd_notify::{self, Notifier};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // libcamera's helper process (started by the daemon itself): before the flags, which
    // do not know it.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(focusd_board::source::LIBCAMERA_HELPER) {
        return ExitCode::from(focusd_board::source::run_libcamera_helper(&args[1..]));
    }
    let flags = Flags::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        // Colour codes are noise in the journal and in files.
        .with_ansi(std::io::stderr().is_terminal());
    // Under systemd the journal stamps every line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        logs.without_time().init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("focusd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(Subcmd::Ctl(ctl)) = &flags.command {
        return match runtime.block_on(focusd::cli::ctl::run(ctl, flags.config.as_deref())) {
            Ok(()) => ExitCode::SUCCESS,
            Err(CtlError::Output(e)) => e.exit("focusd ctl"),
            Err(e) => {
                eprintln!("focusd ctl: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    if let Some(Subcmd::Probe(probe)) = &flags.command {
        return focusd::cli::probe::run(&flags, probe);
    }
    if let Some(Subcmd::Token(token)) = &flags.command {
        return focusd::cli::token::run(&flags, token.rotate);
    }
    let settings = match Settings::load(&flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("focusd: {e}");
            return ExitCode::from(2);
        }
    };
    let notifier = match Notifier::from_env() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("focusd: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    let result = runtime.block_on(async {
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            signals.cancel();
        });
        let tls = settings.http.tls.is_some();
        let daemon = focusd::Daemon::start(settings, shutdown.clone()).await?;
        let url = focusd::doors::http::viewer_url(daemon.http_addr(), tls, None);
        if std::env::var_os("JOURNAL_STREAM").is_some() && daemon.token().is_some() {
            // The journal is read by more people than the token is meant for.
            tracing::info!("viewer at {url} (the link with its token: sudo focusd token)");
        } else {
            let url =
                focusd::doors::http::viewer_url(daemon.http_addr(), tls, daemon.token().as_deref());
            tracing::info!("viewer at {url}");
        }
        let reporter = tokio::spawn(sd_notify::report(
            notifier,
            daemon.liveness().clone(),
            daemon.http_probe(),
            format!(
                "serving {}://{}/",
                if tls { "https" } else { "http" },
                daemon.http_addr()
            ),
            shutdown.clone(),
        ));
        daemon.wait().await;
        // STOPPING=1 goes out before the process ends.
        let _ = reporter.await;
        Ok::<(), focusd::StartError>(())
    });
    // Threads that are still busy get a short grace period, never a hang.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("focusd: {e}");
            ExitCode::from(if e.is_config() { 2 } else { 1 })
        }
    }
}

/// `RUST_LOG`, else `info` with str0m's details left out. sctp_proto logs a viewer's
/// normal goodbye (the SCTP ABORT browsers and aiortc send on close) as an ERROR: it is
/// off unless `RUST_LOG` names it; the hub logs each viewer that goes, and why.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let given = std::env::var("RUST_LOG").unwrap_or_default();
    let mut directives = if given.trim().is_empty() {
        "info,str0m=warn,focusd::webrtc=info".to_string()
    } else {
        given
    };
    if !directives.contains("sctp_proto") {
        directives.push_str(",sctp_proto=off");
    }
    tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sctp_proto=off"))
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
