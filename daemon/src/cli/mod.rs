//! The subcommands beside the daemon: `focusd token`, `focusd probe` and `focusd ctl` (the
//! command-line fleet console). Each one prints through [`stdout`], so a reader that goes
//! away ends it quietly.

pub mod ctl;
pub mod probe;
pub mod stdout;
pub mod token;
