//! `windlass init`: a commented starter `windlass.toml` that validates as written.

use std::io::Write as _;
use std::path::PathBuf;

use crate::{Outcome, UsageError};

const STARTER: &str = include_str!("starter.toml");

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the file [default: ./windlass.toml]
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// The project name [default: the directory's name]
    #[arg(long)]
    name: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let path = crate::config_path(args.config);
    let name = match args.name {
        Some(name) => name,
        None => default_name(&path),
    };
    if !is_slug(&name) {
        return Err(UsageError(format!(
            "`{name}` cannot be a project name: use lowercase letters, digits and `-` (pass --name)"
        ))
        .into());
    }
    // `create_new` makes "refuse to overwrite" atomic: no check-then-write race.
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AlreadyExists {
            UsageError(format!("{} already exists; not overwriting it", path.display()))
        } else {
            UsageError(format!("cannot create {}: {err}", path.display()))
        }
    })?;
    let written = file.write_all(STARTER.replace("{{name}}", &name).as_bytes()).and_then(|()| file.sync_all());
    if let Err(err) = written {
        // Leave nothing half-written behind.
        let _ = std::fs::remove_file(&path);
        return Err(UsageError(format!("cannot write {}: {err}", path.display())).into());
    }
    println!("wrote {} for project `{name}`; check it with: windlass validate production", path.display());
    Ok(Outcome::Ok)
}

/// The project name from the directory that will hold the config, made into a slug.
fn default_name(path: &std::path::Path) -> String {
    let dir = windlass_config::config_dir(path);
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let raw = dir.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let slug: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let slug = slug.trim_matches('-').to_owned();
    if slug.is_empty() { "platform".into() } else { slug }
}

fn is_slug(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}
