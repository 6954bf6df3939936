//! The JSON access log: one line per request on stdout, written by a thread of its own so that a
//! slow terminal or pipe never blocks the data plane. When the log falls 10,000 lines behind,
//! lines are dropped and counted rather than slowing requests down.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use serde::Serialize;

const BACKLOG: usize = 10_000;

#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub time_unix_ms: u64,
    pub client: std::net::IpAddr,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub micros: u64,
    pub request_id: &'a str,
}

#[derive(Debug)]
pub struct AccessLog {
    lines: SyncSender<String>,
    pub dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer thread.
    pub fn start() -> std::io::Result<Self> {
        let (lines, receiver) = std::sync::mpsc::sync_channel::<String>(BACKLOG);
        std::thread::Builder::new().name("edge-access-log".into()).spawn(move || {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            while let Ok(line) = receiver.recv() {
                let _ = writeln!(out, "{line}");
                // Write what is queued, then flush while the queue is empty.
                while let Ok(line) = receiver.try_recv() {
                    let _ = writeln!(out, "{line}");
                }
                let _ = out.flush();
            }
        })?;
        Ok(AccessLog { lines, dropped: Arc::new(AtomicU64::new(0)) })
    }

    pub fn write(&self, entry: &Entry) {
        let Ok(line) = serde_json::to_string(entry) else { return };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.lines.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
