//! What a running deploy does, told in this process to whoever follows it (the API's event
//! streams): each piece of step output as it is stored, and that something else changed (a
//! step started or ended, the deploy ended). A follower reads the store once, then only what
//! it is told; it reads the store again only when told of a change, when it fell behind, or
//! (a deploy run by another server on a shared store tells nothing here) after a quiet while.
//!
//! Nothing is kept for a deploy nobody follows: publishing without a follower costs a lookup.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::broadcast;
use windlass_store::DeployId;

/// What a follower is told.
#[derive(Debug, Clone)]
pub enum Progress {
    /// `text` was appended to step `seq`'s stored output, which was `offset` bytes long before.
    Output { seq: i64, offset: usize, text: Arc<str> },
    /// A step started or ended, or the deploy ended: read the store again.
    Changed,
}

/// Events a follower may fall behind by before it is told it lagged (and reads the store).
const BACKLOG: usize = 256;

static FOLLOWED: LazyLock<Mutex<HashMap<String, broadcast::Sender<Progress>>>> = LazyLock::new(Default::default);

/// Follows the deploy `id` from now on. Subscribe before reading the store: what is published
/// meanwhile then arrives (and is recognised as already read by its offset).
pub fn subscribe(id: &DeployId) -> broadcast::Receiver<Progress> {
    let mut followed = FOLLOWED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Deploys nobody follows any more are forgotten here, so the map holds only followed ones.
    followed.retain(|_, sender| sender.receiver_count() > 0);
    followed.entry(id.to_string()).or_insert_with(|| broadcast::channel(BACKLOG).0).subscribe()
}

/// Tells the deploy's followers, if any.
pub fn publish(id: &DeployId, progress: Progress) {
    let followed = FOLLOWED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(sender) = followed.get(id.as_str()) {
        // No follower left is fine: the next subscribe forgets the entry.
        let _ = sender.send(progress);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_hear_what_is_published_and_nothing_is_kept_for_nobody() {
        let id = DeployId::parse("progress-20261203-000001").expect("an id");
        publish(&id, Progress::Changed);
        let mut follower = subscribe(&id);
        publish(&id, Progress::Output { seq: 1, offset: 0, text: "hello\n".into() });
        match follower.try_recv() {
            Ok(Progress::Output { seq: 1, offset: 0, text }) => assert_eq!(&*text, "hello\n"),
            other => panic!("{other:?}"),
        }
        assert!(follower.try_recv().is_err(), "the publish before subscribing is not replayed");
        drop(follower);
        let other = DeployId::parse("progress-20261203-000002").expect("an id");
        let _keep = subscribe(&other);
        let followed = FOLLOWED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(!followed.contains_key(id.as_str()), "an unfollowed deploy is forgotten");
    }
}
