//! What a subcommand prints on stdout. A reader that goes away early
//! (`focusd token | head -1`) is the normal end of a pipe, not a failure: the command stops
//! writing and exits 0 without a word, as `cat` and ripgrep do (`println!` panics there).
//! Any other write error (a full disk behind a redirect) is a runtime failure, exit 1.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;

/// Why a subcommand's output could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StdoutError {
    /// The reader closed its end of the pipe (EPIPE): stop writing, exit 0.
    #[error("the reader of stdout has gone")]
    Closed,
    /// Any other error writing stdout: exit 1.
    #[error("cannot write to stdout: {0}")]
    Failed(io::Error),
}

impl StdoutError {
    /// The exit status for a command that stopped on this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            StdoutError::Closed => 0,
            StdoutError::Failed(_) => 1,
        }
    }

    /// Ends the command: quietly when the reader went away, with one line on stderr
    /// otherwise.
    pub fn exit(&self, command: &str) -> ExitCode {
        if let StdoutError::Failed(_) = self {
            eprintln!("{command}: {self}");
        }
        ExitCode::from(self.exit_code())
    }
}

impl From<io::Error> for StdoutError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            StdoutError::Closed
        } else {
            StdoutError::Failed(e)
        }
    }
}

/// Writes `args` to stdout and flushes it, so that a line is out (or its error known)
/// before the command goes on.
pub fn write(args: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)?;
    out.flush()?;
    Ok(())
}

/// `println!` that returns a [`StdoutError`] instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_a_quiet_success_and_other_errors_fail() {
        let closed = StdoutError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(closed, StdoutError::Closed));
        assert_eq!(closed.exit_code(), 0);
        let full = StdoutError::from(io::Error::from_raw_os_error(28)); // ENOSPC
        assert!(matches!(full, StdoutError::Failed(_)));
        assert_eq!(full.exit_code(), 1);
    }
}
