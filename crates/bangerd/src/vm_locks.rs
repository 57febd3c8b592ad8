//! Per-VM locks: operations on one VM run one at a time, different VMs in
//! parallel. Lock order: a VM lock first, then subsystem locks; never the
//! other way round.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use banger_model::Id;
use tokio::sync::OwnedMutexGuard;

#[derive(Debug, Default)]
pub struct VmLocks {
    locks: Mutex<HashMap<Id, Arc<tokio::sync::Mutex<()>>>>,
}

impl VmLocks {
    /// Waits for the VM's lock. Entries are created on demand and shared, so
    /// two callers for the same id always contend on the same mutex.
    pub async fn lock(&self, id: &Id) -> OwnedMutexGuard<()> {
        let mutex = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(locks.entry(id.clone()).or_default())
        };
        mutex.lock_owned().await
    }

    /// Drops the entry of a deleted VM (only if nobody holds or waits on it).
    pub fn forget(&self, id: &Id) {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(mutex) = locks.get(id)
            && Arc::strong_count(mutex) == 1
        {
            locks.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_vm_serialises_different_vms_do_not() {
        let locks = Arc::new(VmLocks::default());
        let a = Id::generate();
        let b = Id::generate();
        let held = locks.lock(&a).await;
        // Another VM's lock is free.
        let other = tokio::time::timeout(Duration::from_secs(1), locks.lock(&b)).await;
        assert!(other.is_ok());
        // The same VM's lock waits until released.
        let waiter = {
            let locks = Arc::clone(&locks);
            let a = a.clone();
            tokio::spawn(async move { locks.lock(&a).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        locks.forget(&a);
        assert!(locks.locks.lock().unwrap().get(&a).is_none());
    }
}
