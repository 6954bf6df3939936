//! A builder that runs the real `windlass` binary in a directory of its own, with a clean
//! environment (so a variable set on the developer's machine cannot satisfy a check).

use std::path::{Path, PathBuf};
use std::process::Command;

use windlass_testkit::TempDir;

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout and stderr together, for "never printed anywhere" checks.
    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub struct Windlass {
    dir: TempDir,
    cwd: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl Windlass {
    pub fn new() -> Self {
        Windlass { dir: windlass_testkit::tempdir(), cwd: None, env: Vec::new() }
    }

    /// A copy of the Maily example in the test's directory.
    pub fn with_maily() -> Self {
        let test = Self::new();
        let example = repo_root().join("examples/maily");
        copy_dir(&example, test.dir.path());
        test
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, contents: &str) -> &Self {
        std::fs::write(self.dir.path().join(name), contents).unwrap();
        self
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap()
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_windlass"));
        command
            .args(args)
            .current_dir(self.cwd.as_deref().unwrap_or(self.dir.path()))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let output = command.output().unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Copies a directory, leaving out the state a local `windlass up` may have left (`.windlass`).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == ".windlass" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
