//! A step's output, written to the store in order as lines arrive, secrets redacted.

use super::*;

/// One step's output, written to the store in order as lines arrive (secrets redacted).
pub struct StepLog {
    sender: mpsc::UnboundedSender<String>,
    writer: tokio::task::JoinHandle<()>,
}

impl StepLog {
    pub(super) fn open(store: Arc<dyn Store>, id: DeployId, seq: i64, variables: Variables) -> Self {
        let (sender, mut lines) = mpsc::unbounded_channel::<String>();
        // Owned by the step: `close` waits for it, so the output is stored before the step ends.
        #[allow(clippy::disallowed_methods)]
        let writer = tokio::spawn(async move {
            while let Some(line) = lines.recv().await {
                let mut text = variables.redact(&line);
                // Take whatever else is waiting too: one write for a burst of lines.
                while let Ok(more) = lines.try_recv() {
                    text.push('\n');
                    text.push_str(&variables.redact(&more));
                }
                text.push('\n');
                if let Err(err) = store.append_step_output(&id, seq, &text).await {
                    tracing::warn!(%err, "cannot store step output");
                }
            }
        });
        StepLog { sender, writer }
    }

    /// A log kept in memory, for an operation outside a deploy (`windlass scale`): the lines
    /// arrive on the returned receiver.
    pub fn detached() -> (Self, mpsc::UnboundedReceiver<String>) {
        let (sender, lines) = mpsc::unbounded_channel();
        // Nothing to write: an empty task that ends at once.
        #[allow(clippy::disallowed_methods)]
        let writer = tokio::spawn(async {});
        (StepLog { sender, writer }, lines)
    }

    pub fn line(&self, text: impl Into<String>) {
        let _ = self.sender.send(text.into());
    }

    pub fn sender(&self) -> mpsc::UnboundedSender<String> {
        self.sender.clone()
    }

    pub(super) async fn close(self) {
        drop(self.sender);
        let _ = self.writer.await;
    }
}
