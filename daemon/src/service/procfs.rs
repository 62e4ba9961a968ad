//! CPU time and memory of a process or thread, read from Linux's `/proc`.

/// Linux reports CPU time in /proc in USER_HZ ticks, 100 per second on every architecture
/// focusd targets.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// Why a /proc file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcError {
    /// The file is missing or unreadable (the process is gone, or not Linux).
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file does not have the expected shape.
    #[error("unexpected contents in {0}")]
    Format(String),
}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.to_string(),
        source,
    })
}

/// User plus system CPU ticks from a `stat` file's text.
pub fn stat_ticks(stat: &str) -> Option<u64> {
    // The command name, in parentheses, may hold spaces: count fields after the last ')'.
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU ticks used so far by `/proc/<who>/stat` (`self`, `thread-self` or a pid).
pub fn cpu_ticks(who: &str) -> Result<u64, ProcError> {
    let path = format!("/proc/{who}/stat");
    stat_ticks(&read(&path)?).ok_or(ProcError::Format(path))
}

/// (VmRSS, VmHWM) of `/proc/<who>/status`, in KiB.
pub fn memory_kib(who: &str) -> Result<(u64, u64), ProcError> {
    let path = format!("/proc/{who}/status");
    let status = read(&path)?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    match (field("VmRSS:"), field("VmHWM:")) {
        (Some(rss), Some(hwm)) => Ok((rss, hwm)),
        _ => Err(ProcError::Format(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let stat = "123 (focusd enc ) x) S 1 2 3 4 5 6 7 8 9 10 300 25 0 0 20 0";
        assert_eq!(stat_ticks(stat), Some(325));
        assert_eq!(stat_ticks("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        assert!(cpu_ticks("self").is_ok());
        let (rss, hwm) = memory_kib("self").unwrap();
        assert!(rss > 0 && hwm >= rss);
        assert!(matches!(
            memory_kib("999999999"),
            Err(ProcError::Read { .. })
        ));
    }
}
