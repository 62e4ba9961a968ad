//! `focusd-bench`: the benchmark of the focusd beside it (see `focusd_testkit::bench`).

use std::process::ExitCode;

use clap::Parser;
use focusd_testkit::bench::{self, BenchFlags};

fn main() -> ExitCode {
    let flags = BenchFlags::parse();
    match bench::run(&flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("focusd-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
