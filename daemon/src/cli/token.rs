//! `focusd token [--rotate]`: prints the access token and the viewer link with it.
//!
//! Exit status: 0 printed (also when the reader of stdout went away: the token file is
//! written before anything is printed, so nothing is left half-done); 2 bad configuration,
//! auth off, or `--rotate` with a configured token; 1 the token file cannot be read or
//! written, or stdout fails.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::stdout::{StdoutError, outln};
use crate::config::{AuthMode, Flags, Settings};
use crate::doors::http::auth;

/// The config file of the package: the operator's shell gets the service's token without
/// `--config`.
const PACKAGED_CONFIG: &str = "/etc/focusd/focusd.toml";

/// Runs `focusd token`.
pub fn run(flags: &Flags, rotate: bool) -> ExitCode {
    let packaged = Path::new(PACKAGED_CONFIG);
    let settings = match (&flags.config, packaged.exists()) {
        (None, true) => {
            crate::config::read_file(packaged).and_then(|f| Settings::resolve(flags, f))
        }
        _ => Settings::load(flags),
    };
    let settings = match settings {
        Ok(s) => s,
        Err(e) => {
            eprintln!("focusd: {e}");
            return ExitCode::from(2);
        }
    };
    if settings.auth.mode == AuthMode::Off {
        eprintln!("focusd token: authentication is off ([auth] mode = \"off\")");
        return ExitCode::from(2);
    }
    let token = match (&settings.auth.token, rotate) {
        (Some(_), true) => {
            eprintln!(
                "focusd token: the token is configured ([auth] token or FOCUSD_TOKEN): change it there"
            );
            return ExitCode::from(2);
        }
        (Some(t), false) => Ok(t.clone()),
        (None, true) => auth::rotate(&settings.auth.token_file),
        (None, false) => auth::load_or_create(&settings.auth.token_file).map(|(t, _)| t),
    };
    let token = match token {
        Ok(t) => t,
        Err(e) => {
            eprintln!("focusd token: {e}");
            return ExitCode::from(1);
        }
    };
    if rotate {
        eprintln!("clients holding the old token are refused from now on");
    }
    let url =
        crate::doors::http::viewer_url(settings.listen, settings.http.tls.is_some(), Some(&token));
    match print(&token, &url) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.exit("focusd token"),
    }
}

fn print(token: &str, url: &str) -> Result<(), StdoutError> {
    outln!("{token}")?;
    outln!("viewer: {url}")
}
