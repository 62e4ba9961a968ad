//! `focusd bench`.
use crate::config::BenchFlags;

pub async fn run(_flags: BenchFlags) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
