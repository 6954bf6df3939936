//! The deploy lock's heartbeat: renewals while the work that holds it runs. It must not
//! release the lock (the work does, when it ends).

use super::*;

/// Renews a lease while it lives (see [`Deployer::heartbeat`]); dropping it stops the renewals.
pub struct Heartbeat(pub(super) tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) async fn renew(store: Arc<dyn Store>, lease: Lease, lost: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(LOCK_TTL / 3).await;
        if let Err(err) = store.renew_lease(&lease).await {
            tracing::error!(%err, "the deploy lock could not be renewed");
            if matches!(err, windlass_store::StoreError::LeaseLost { .. }) {
                lost.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}
