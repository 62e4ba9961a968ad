//! `focusd probe`: what this machine has and what focusd would use on it (see
//! [`focusd_board::probe`]), for the configuration the flags and `--config` give. Text for
//! people, JSON (`--json`) for scripts.
//!
//! Exit status: 0, also when it finds problems (they are in the report, each with its fix)
//! and when the reader of stdout goes away; 2 when the configuration cannot be read; 1 when
//! stdout fails otherwise.

use std::process::ExitCode;

use crate::cli::stdout::{self, outln};
use crate::config::{Flags, ProbeFlags, Settings};

/// Probes the machine and prints the report.
pub fn run(flags: &Flags, probe: &ProbeFlags) -> ExitCode {
    let settings = match Settings::load(flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("focusd probe: {e}");
            return ExitCode::from(2);
        }
    };
    let report = focusd_board::probe::probe(&settings.source, &settings.video.encoder);
    let printed = if probe.json {
        // Plain data (strings, numbers, lists): serializing cannot fail.
        let json = serde_json::to_string_pretty(&report).expect("the report serializes");
        outln!("{json}")
    } else {
        stdout::write(format_args!("{report}"))
    };
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.exit("focusd probe"),
    }
}
