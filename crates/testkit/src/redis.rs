//! A real `redis-server` for tests, on a loopback port of its own, with nothing saved to disk;
//! killed when dropped.
//!
//! Redis cannot take a listening socket from its parent, so the port is found free and then
//! given to it; should another process take it in between, the start is retried on another.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `redis-server`.
pub struct Redis {
    pub address: SocketAddr,
    /// The `requirepass` it was started with.
    pub password: Option<String>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// `redis://[:password@]127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@{}", self.address),
            None => format!("redis://{}", self.address),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary: `WINDLASS_TEST_REDIS_SERVER`, or `redis-server` on the PATH.
fn binary() -> String {
    std::env::var("WINDLASS_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// Starts `redis-server --port <free> --save ''` (with `--requirepass` when a password is given)
/// and waits until it accepts connections.
pub fn start(password: Option<&str>) -> Redis {
    let mut last_output = Vec::new();
    for _ in 0..5 {
        let port = crate::process::loopback_listener().local_addr().unwrap().port();
        let dir = crate::tempdir();
        let mut command = Command::new(binary());
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--logfile", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let mut child = command.spawn().unwrap_or_else(|err| {
            panic!("cannot start {} (install redis-server or set WINDLASS_TEST_REDIS_SERVER): {err}", binary())
        });
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        last_output.clear();
        let ready = loop {
            match lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("Ready to accept connections") => break true,
                Ok(line) => last_output.push(line),
                Err(_) => break false,
            }
        };
        if ready {
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            return Redis { address, password: password.map(str::to_owned), child, _dir: dir };
        }
        let _ = child.kill();
        let _ = child.wait();
        if !last_output.iter().any(|l| l.contains("in use")) {
            break;
        }
    }
    panic!("redis-server did not start:\n{}", last_output.join("\n"));
}
