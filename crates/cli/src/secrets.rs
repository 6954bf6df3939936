//! `windlass secrets ...`: being built.

use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<Outcome> {
    Err(crate::UsageError("`windlass secrets` is not built yet".into()).into())
}
