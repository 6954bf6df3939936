//! A step's output, written to the store in order as lines arrive, secrets redacted, and capped:
//! a step keeps its first [`HEAD_BYTES`] and its last [`TAIL_BYTES`] of output, with a
//! `[... N bytes of output dropped ...]` line between them, so a step printing 100 MB neither
//! grows the server's memory nor the store's row. Lines wait in a bounded buffer (never a
//! channel without bound); each write to the store is told to the deploy's followers
//! ([`super::progress`]).

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::progress::{self, Progress};
use super::*;

/// The first bytes of a step's output, stored as they come (what went wrong usually starts here).
pub const HEAD_BYTES: usize = 512 * 1024;
/// The last bytes of a step's output, stored when the step ends (where it ended).
pub const TAIL_BYTES: usize = 512 * 1024;

/// The line that stands for what was dropped between the head and the tail.
pub fn dropped_marker(bytes: u64) -> String {
    format!("[... {bytes} bytes of output dropped ...]")
}

/// The output of one step, within its caps.
#[derive(Default)]
struct Capped {
    /// Head text not yet written to the store.
    pending: String,
    /// Bytes taken into the head so far (written or pending).
    head: usize,
    /// Once the head is full: the latest lines, at most [`TAIL_BYTES`] together.
    tail: VecDeque<String>,
    tail_bytes: usize,
    /// Bytes (newlines included) that are in neither the head nor the tail.
    dropped: u64,
    closed: bool,
}

impl Capped {
    /// Takes one redacted line (without its newline).
    fn push(&mut self, line: &str) {
        let size = line.len() + 1;
        if self.tail.is_empty() && self.head + size <= HEAD_BYTES {
            self.pending.push_str(line);
            self.pending.push('\n');
            self.head += size;
            return;
        }
        // The head is full: the line goes to the tail, whose oldest lines make room.
        let mut line = line.to_owned();
        if size > TAIL_BYTES {
            // Only its end fits (cut at a character, never inside one).
            let mut cut = line.len() + 1 - TAIL_BYTES;
            while !line.is_char_boundary(cut) {
                cut += 1;
            }
            self.dropped += cut as u64;
            line.drain(..cut);
        }
        self.tail_bytes += line.len() + 1;
        self.tail.push_back(line);
        while self.tail_bytes > TAIL_BYTES {
            let Some(oldest) = self.tail.pop_front() else { break };
            self.tail_bytes -= oldest.len() + 1;
            self.dropped += oldest.len() as u64 + 1;
        }
    }

    /// What is left to write once the step ends: the tail, behind the marker if anything was
    /// dropped.
    fn finish(&mut self) -> String {
        let mut text = std::mem::take(&mut self.pending);
        if self.dropped > 0 {
            text.push_str(&dropped_marker(self.dropped));
            text.push('\n');
        }
        for line in self.tail.drain(..) {
            text.push_str(&line);
            text.push('\n');
        }
        self.tail_bytes = 0;
        text
    }
}

struct Shared {
    capped: Mutex<Capped>,
    /// Wakes the writer when lines are pending or the log is closed.
    wake: Notify,
    variables: Variables,
}

impl Shared {
    fn capped(&self) -> std::sync::MutexGuard<'_, Capped> {
        self.capped.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One step's output, written to the store in order as lines arrive (secrets redacted).
pub struct StepLog {
    shared: Arc<Shared>,
    writer: tokio::task::JoinHandle<()>,
}

/// The lines of a [`StepLog::detached`] log (within the same caps), once it is done.
pub struct DetachedLines(Arc<Shared>);

impl DetachedLines {
    /// Every line kept, the dropped marker in its place.
    pub fn take(&self) -> Vec<String> {
        self.0.capped().finish().lines().map(str::to_owned).collect()
    }
}

impl StepLog {
    pub(super) fn open(store: Arc<dyn Store>, id: DeployId, seq: i64, variables: Variables) -> Self {
        let shared = Arc::new(Shared { capped: Mutex::default(), wake: Notify::new(), variables });
        let writing = shared.clone();
        // Owned by the step: `close` waits for it, so the output is stored before the step ends.
        #[allow(clippy::disallowed_methods)]
        let writer = tokio::spawn(async move {
            // The step's stored output starts empty (`start_step`); only this task appends to it.
            let mut offset = 0;
            loop {
                writing.wake.notified().await;
                // One write for whatever came meanwhile: a burst of lines is one row update.
                let (text, closed) = {
                    let mut capped = writing.capped();
                    if capped.closed { (capped.finish(), true) } else { (std::mem::take(&mut capped.pending), false) }
                };
                if !text.is_empty() {
                    match store.append_step_output(&id, seq, &text).await {
                        Ok(()) => {
                            progress::publish(&id, Progress::Output { seq, offset, text: text.as_str().into() });
                            offset += text.len();
                        }
                        Err(err) => tracing::warn!(%err, "cannot store step output"),
                    }
                }
                if closed {
                    return;
                }
            }
        });
        StepLog { shared, writer }
    }

    /// A log kept in memory, for an operation outside a deploy (`windlass scale`): its lines
    /// (redacted, capped as a step's) are read from the returned handle.
    pub fn detached() -> (Self, DetachedLines) {
        let shared =
            Arc::new(Shared { capped: Mutex::default(), wake: Notify::new(), variables: Variables::default() });
        // Nothing to write: an empty task that ends at once.
        #[allow(clippy::disallowed_methods)]
        let writer = tokio::spawn(async {});
        (StepLog { shared: shared.clone(), writer }, DetachedLines(shared))
    }

    /// Adds a line (a newline inside it makes several).
    pub fn line(&self, text: impl Into<String>) {
        let text = self.shared.variables.redact(&text.into());
        {
            let mut capped = self.shared.capped();
            for line in text.split('\n') {
                capped.push(line);
            }
        }
        self.shared.wake.notify_one();
    }

    pub(super) async fn close(self) {
        self.shared.capped().closed = true;
        self.shared.wake.notify_one();
        let _ = self.writer.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_keeps_its_head_and_tail_and_says_how_much_was_dropped() {
        let mut capped = Capped::default();
        let line = "x".repeat(1023);
        // 3 MiB of 1 KiB lines (newline included).
        for _ in 0..3 * 1024 {
            capped.push(&line);
        }
        capped.push("the last line");
        let head = std::mem::take(&mut capped.pending);
        let rest = capped.finish();
        assert_eq!(head.len(), HEAD_BYTES);
        assert!(rest.len() <= TAIL_BYTES + 100, "{}", rest.len());
        assert!(rest.ends_with("the last line\n"));
        let kept = (head.len() + rest.len()) as u64;
        let total = 3 * 1024 * 1024 + "the last line\n".len() as u64;
        let marker = rest.lines().next().unwrap_or_default().to_owned();
        let dropped = total - (kept - marker.len() as u64 - 1);
        assert_eq!(marker, dropped_marker(dropped));
    }

    #[test]
    fn one_huge_line_keeps_its_end_cut_at_a_character() {
        let mut capped = Capped { head: HEAD_BYTES, ..Capped::default() };
        let huge = format!("{}é{}", "a".repeat(TAIL_BYTES), "b".repeat(10));
        capped.push(&huge);
        let rest = capped.finish();
        assert!(rest.starts_with("[... ") && rest.ends_with("bbbbbbbbbb\n"), "{}", &rest[..60]);
        assert!(rest.len() <= TAIL_BYTES + 60);
    }

    /// A real shell step printing 7 MB (seven times the caps) into a step of a real store, followed
    /// as the API follows it: the store keeps the head, the marker and the tail; what the
    /// follower is told adds up to exactly what was stored.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_step_printing_megabytes_stores_its_head_and_tail_and_tells_its_followers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().join("windlass.db").display().to_string();
        let store = windlass_store::open(&location, Arc::new(windlass_store::SystemClock)).await.expect("store");
        let deploy = windlass_store::NewDeploy {
            environment: "production".into(),
            actor: "alice".into(),
            reason: None,
            config_snapshot: String::new(),
            artifacts: "{}".into(),
            owner: "server-test".into(),
        };
        let id = store.create_deploy(&deploy).await.expect("deploy");
        let seq = store.start_step(&id, "build", "print a lot").await.expect("step");
        let mut follower = progress::subscribe(&id);
        let log = StepLog::open(store.clone(), id.clone(), seq, Variables::default());
        let env = BTreeMap::from([("PATH".to_owned(), std::env::var("PATH").unwrap_or_default())]);
        // 7 MB of numbered lines (`seq` of a million numbers), the first and last known.
        let script = "echo first; seq 1 1000000; echo last";
        let redactor = windlass_secrets::Redactor::new([("TOKEN", "s3cr3t-value")]);
        command::run(script, &env, Duration::from_secs(300), 0, &redactor, |line| log.line(line)).await.expect("ran");
        log.close().await;

        let steps = store.steps(&id).await.expect("steps");
        let output = &steps[0].output;
        assert!(output.len() <= HEAD_BYTES + TAIL_BYTES + 100, "{} bytes stored", output.len());
        assert!(output.starts_with("first\n1\n2\n"), "{}", &output[..40]);
        assert!(output.ends_with("999999\n1000000\nlast\n"), "{}", &output[output.len() - 40..]);
        let printed: u64 = 6 + (1..=1_000_000u64).map(|n| n.to_string().len() as u64 + 1).sum::<u64>() + 5;
        let marker = output.lines().find(|line| line.starts_with("[... ")).expect("a marker");
        let kept = output.len() as u64 - marker.len() as u64 - 1;
        assert_eq!(marker, dropped_marker(printed - kept));
        // The follower was told every piece, in order, adding up to what is stored.
        let mut told = String::new();
        while let Ok(event) = follower.try_recv() {
            if let Progress::Output { offset, text, .. } = event {
                assert_eq!(offset, told.len());
                told.push_str(&text);
            }
        }
        assert_eq!(&told, output);
    }

    #[test]
    fn output_under_the_caps_is_kept_whole() {
        let mut capped = Capped::default();
        capped.push("one");
        capped.push("two");
        assert_eq!(capped.finish(), "one\ntwo\n");
    }
}
