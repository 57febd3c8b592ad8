//! The warm TAP pool: a few idle TAPs (`btap-pool-<n>`) kept attached to the
//! bridge and up, so a VM start only renames one instead of creating it.
//!
//! [`TapPool::acquire`] takes an idle TAP and renames it to the VM's TAP name
//! (link down, rename, up), or creates the VM's TAP directly when the pool is
//! empty. Refilling happens in a background task, never on the caller's
//! path. Each idle TAP is handed to exactly one caller: concurrent acquires
//! take distinct TAPs or fall back to creating their own.
//!
//! At start the pool adopts `btap-pool-*` TAPs left by an earlier daemon
//! (re-attaching them to the bridge) and deletes any beyond its size;
//! [`TapPool::shutdown`] deletes the idle ones.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::link::{CreateTapError, DeleteTapError};
use crate::names::{
    InvalidIfName, pool_tap_index_in, pool_tap_name_in, pool_tap_prefix, validate_tap_name,
};
use crate::ops::NetOps;

/// How long the refill task waits after a failed creation before trying
/// again (an acquire wakes it sooner).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// A TAP handed to a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquiredTap {
    /// The VM's TAP name (what was asked for).
    pub name: String,
    /// Whether it came from the idle pool (false: created on the spot).
    pub from_pool: bool,
}

/// Why no TAP could be acquired.
#[derive(Debug, thiserror::Error)]
pub enum AcquireTapError {
    #[error("invalid VM TAP name")]
    InvalidName(#[source] InvalidIfName),
    #[error("cannot create TAP {name} for the VM")]
    Create {
        name: String,
        #[source]
        source: CreateTapError,
    },
}

/// The pool's state, as the refill task last reported it.
#[derive(Debug, Clone)]
pub struct PoolStatus {
    /// Idle TAPs ready to hand out.
    pub idle: usize,
    /// How many idle TAPs the pool keeps.
    pub target: usize,
    /// The last refill failure, cleared by the next success.
    pub last_error: Option<Arc<CreateTapError>>,
}

#[derive(Debug)]
struct Inner {
    ops: Arc<dyn NetOps>,
    bridge: String,
    target: usize,
    idle: Mutex<VecDeque<String>>,
    next_index: AtomicU32,
    /// The naming space of the pool's TAP names (see [`crate::names`]).
    space: u8,
    wake: Notify,
    closed: AtomicBool,
    status: watch::Sender<PoolStatus>,
}

/// A warm pool of idle TAPs on one bridge. See the module docs.
#[derive(Debug)]
pub struct TapPool {
    inner: Arc<Inner>,
    refill: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn idle(&self) -> MutexGuard<'_, VecDeque<String>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, last_error: Option<Option<Arc<CreateTapError>>>) {
        let idle = self.idle().len();
        self.status.send_modify(|status| {
            status.idle = idle;
            if let Some(error) = last_error {
                status.last_error = error;
            }
        });
    }

    /// A pool name not currently idle.
    fn next_name(&self) -> String {
        loop {
            let name =
                pool_tap_name_in(self.space, self.next_index.fetch_add(1, Ordering::Relaxed));
            if !self.idle().contains(&name) {
                return name;
            }
        }
    }

    /// Adopts pool TAPs left by an earlier run: re-attaches up to `target` of
    /// them, deletes the rest.
    async fn adopt_leftovers(&self) {
        let leftovers = match self.ops.list_links(&pool_tap_prefix(self.space)).await {
            Ok(names) => names,
            Err(error) => {
                tracing::warn!(error = %error, "cannot list leftover pool TAPs");
                return;
            }
        };
        let leftovers: BTreeSet<(u32, String)> = leftovers
            .into_iter()
            .filter_map(|name| pool_tap_index_in(self.space, &name).map(|index| (index, name)))
            .collect();
        if let Some((highest, _)) = leftovers.last() {
            self.next_index
                .fetch_max(highest.saturating_add(1), Ordering::Relaxed);
        }
        for (_, name) in leftovers {
            if self.idle().len() < self.target {
                match self.ops.create_tap(&name, &self.bridge).await {
                    Ok(_) => {
                        tracing::debug!(tap = %name, "adopted leftover pool TAP");
                        self.idle().push_back(name);
                        self.publish(None);
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(tap = %name, error = %error, "cannot adopt leftover pool TAP; deleting it");
                    }
                }
            }
            if let Err(error) = self.ops.delete_tap(&name).await {
                tracing::warn!(tap = %name, error = %error, "cannot delete surplus pool TAP");
            }
        }
    }

    async fn refill_loop(self: Arc<Self>) {
        self.adopt_leftovers().await;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            if self.idle().len() >= self.target {
                self.wake.notified().await;
                continue;
            }
            let name = self.next_name();
            match self.ops.create_tap(&name, &self.bridge).await {
                Ok(_) => {
                    tracing::debug!(tap = %name, "pool TAP ready");
                    self.idle().push_back(name);
                    self.publish(Some(None));
                }
                Err(error) => {
                    tracing::warn!(tap = %name, bridge = %self.bridge, error = %error, "cannot refill TAP pool");
                    self.publish(Some(Some(Arc::new(error))));
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(RETRY_AFTER_FAILURE) => {}
                    }
                }
            }
        }
    }
}

impl TapPool {
    /// Starts a pool keeping `target` idle TAPs attached to `bridge` (which
    /// must exist). Filling happens in a background task on the current
    /// tokio runtime; `target == 0` keeps no idle TAPs.
    pub fn start(ops: Arc<dyn NetOps>, bridge: impl Into<String>, target: usize) -> Self {
        Self::start_in(ops, bridge, target, 0)
    }

    /// Like [`TapPool::start`], naming its TAPs in naming space `space`
    /// (`btap-pool<space>-<n>`), as a daemon running as its user does so
    /// that its pool never takes another user's names.
    pub fn start_in(
        ops: Arc<dyn NetOps>,
        bridge: impl Into<String>,
        target: usize,
        space: u8,
    ) -> Self {
        let (status, _) = watch::channel(PoolStatus {
            idle: 0,
            target,
            last_error: None,
        });
        let inner = Arc::new(Inner {
            ops,
            bridge: bridge.into(),
            target,
            idle: Mutex::new(VecDeque::new()),
            next_index: AtomicU32::new(0),
            space,
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            status,
        });
        let refill = tokio::spawn(inner.clone().refill_loop());
        Self {
            inner,
            refill: Mutex::new(Some(refill)),
        }
    }

    /// Gives the VM its TAP `vm_tap` (e.g. from
    /// [`vm_tap_name`](crate::names::vm_tap_name)): an idle pool TAP renamed,
    /// or a fresh one. The TAP is attached to the bridge and up either way.
    pub async fn acquire(&self, vm_tap: &str) -> Result<AcquiredTap, AcquireTapError> {
        validate_tap_name(vm_tap).map_err(AcquireTapError::InvalidName)?;
        let candidate = self.inner.idle().pop_front();
        if candidate.is_some() {
            self.inner.publish(None);
        }
        self.inner.wake.notify_one();

        if let Some(pool_tap) = candidate {
            match self.inner.ops.rename_tap(&pool_tap, vm_tap).await {
                Ok(()) => {
                    tracing::debug!(tap = vm_tap, from = %pool_tap, "TAP taken from pool");
                    return Ok(AcquiredTap {
                        name: vm_tap.to_owned(),
                        from_pool: true,
                    });
                }
                Err(error) => {
                    tracing::warn!(tap = vm_tap, from = %pool_tap, error = %error, "cannot rename pool TAP; creating the VM's TAP directly");
                    if let Err(error) = self.inner.ops.delete_tap(&pool_tap).await {
                        tracing::warn!(tap = %pool_tap, error = %error, "cannot delete unusable pool TAP");
                    }
                }
            }
        }

        self.inner
            .ops
            .create_tap(vm_tap, &self.inner.bridge)
            .await
            .map_err(|source| AcquireTapError::Create {
                name: vm_tap.to_owned(),
                source,
            })?;
        tracing::debug!(tap = vm_tap, "TAP created (pool empty)");
        Ok(AcquiredTap {
            name: vm_tap.to_owned(),
            from_pool: false,
        })
    }

    /// Deletes the VM's TAP. Returns false when it was already gone.
    pub async fn release(&self, vm_tap: &str) -> Result<bool, DeleteTapError> {
        self.inner.ops.delete_tap(vm_tap).await
    }

    /// The bridge the pool's TAPs are attached to.
    pub fn bridge(&self) -> &str {
        &self.inner.bridge
    }

    /// The pool's current state.
    pub fn status(&self) -> PoolStatus {
        self.inner.status.borrow().clone()
    }

    /// Names of the idle TAPs right now.
    pub fn idle_taps(&self) -> Vec<String> {
        self.inner.idle().iter().cloned().collect()
    }

    /// Waits until the pool holds its target of idle TAPs, or until a refill
    /// attempt fails (that error is returned). For start-up checks and tests.
    pub async fn wait_filled(&self) -> Result<(), Arc<CreateTapError>> {
        let mut status = self.inner.status.subscribe();
        let status = status
            .wait_for(|s| s.idle >= s.target || s.last_error.is_some())
            .await
            .map(|s| s.clone());
        match status {
            Ok(PoolStatus {
                last_error: Some(error),
                ..
            }) => Err(error),
            _ => Ok(()),
        }
    }

    /// Stops refilling and deletes the idle TAPs. Returns how many were
    /// deleted. Acquires after this still work; they create TAPs directly.
    pub async fn shutdown(&self) -> usize {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake.notify_one();
        let task = self
            .refill
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = task
            && let Err(error) = task.await
        {
            tracing::warn!(error = %error, "TAP pool refill task ended abnormally");
        }
        let idle: Vec<String> = self.inner.idle().drain(..).collect();
        self.inner.publish(None);
        let mut deleted = 0;
        for name in idle {
            match self.inner.ops.delete_tap(&name).await {
                Ok(_) => deleted += 1,
                Err(error) => {
                    tracing::warn!(tap = %name, error = %error, "cannot delete idle pool TAP");
                }
            }
        }
        deleted
    }
}

impl Drop for TapPool {
    fn drop(&mut self) {
        // Let the refill task finish its current step and exit; idle TAPs
        // stay and are adopted by the next pool (use `shutdown` to delete).
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, FakeNetOps, Op};

    const BRIDGE: &str = "br-banger";

    async fn fake_with_bridge() -> Arc<FakeNetOps> {
        let ops = Arc::new(FakeNetOps::new());
        ops.ensure_bridge(BRIDGE, "172.30.0.1/24".parse().unwrap())
            .await
            .unwrap();
        ops
    }

    #[tokio::test]
    async fn fills_hands_out_by_rename_and_refills() {
        let ops = fake_with_bridge().await;
        let pool = TapPool::start(ops.clone(), BRIDGE, 2);
        pool.wait_filled().await.unwrap();
        assert_eq!(pool.idle_taps(), vec!["btap-pool-0", "btap-pool-1"]);

        let tap = pool.acquire("btap-0123456789").await.unwrap();
        assert_eq!(
            tap,
            AcquiredTap {
                name: "btap-0123456789".into(),
                from_pool: true
            }
        );
        assert!(ops.calls().contains(&Call::RenameTap {
            from: "btap-pool-0".into(),
            to: "btap-0123456789".into()
        }));
        pool.wait_filled().await.unwrap();
        assert_eq!(pool.idle_taps(), vec!["btap-pool-1", "btap-pool-2"]);
        assert_eq!(
            ops.taps().get("btap-0123456789").map(String::as_str),
            Some(BRIDGE)
        );

        assert!(pool.release("btap-0123456789").await.unwrap());
        assert!(!pool.release("btap-0123456789").await.unwrap());
        assert_eq!(pool.shutdown().await, 2);
        assert!(ops.taps().is_empty());
    }

    #[tokio::test]
    async fn empty_pool_creates_directly() {
        let ops = fake_with_bridge().await;
        let pool = TapPool::start(ops.clone(), BRIDGE, 0);
        pool.wait_filled().await.unwrap();
        let tap = pool.acquire("btap-aaaaaaaaaa").await.unwrap();
        assert!(!tap.from_pool);
        assert_eq!(ops.calls_of(Op::RenameTap), vec![]);
        assert_eq!(ops.taps().len(), 1);
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn failed_rename_falls_back_to_creating_and_drops_the_pool_tap() {
        let ops = fake_with_bridge().await;
        ops.fail_nth(Op::RenameTap, 1);
        let pool = TapPool::start(ops.clone(), BRIDGE, 1);
        pool.wait_filled().await.unwrap();
        let tap = pool.acquire("btap-bbbbbbbbbb").await.unwrap();
        assert!(!tap.from_pool);
        assert!(ops.calls().contains(&Call::DeleteTap {
            name: "btap-pool-0".into()
        }));
        assert!(ops.taps().contains_key("btap-bbbbbbbbbb"));
        pool.shutdown().await;
        assert_eq!(
            ops.taps().keys().collect::<Vec<_>>(),
            vec!["btap-bbbbbbbbbb"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refill_failure_is_reported_then_retried() {
        let ops = fake_with_bridge().await;
        ops.fail_nth(Op::CreateTap, 1);
        let pool = TapPool::start(ops.clone(), BRIDGE, 1);
        let error = pool.wait_filled().await.unwrap_err();
        assert!(error.to_string().contains("btap-pool-0"), "{error}");
        // The paused clock advances past the retry delay once all is idle.
        let mut status = pool.inner.status.subscribe();
        status.wait_for(|s| s.idle == 1).await.unwrap();
        assert!(pool.status().last_error.is_none());
        pool.shutdown().await;
        assert!(ops.taps().is_empty());
    }

    #[tokio::test]
    async fn create_failure_on_acquire_is_an_error() {
        let ops = fake_with_bridge().await;
        let pool = TapPool::start(ops.clone(), BRIDGE, 0);
        pool.wait_filled().await.unwrap();
        ops.fail_always(Op::CreateTap);
        let err = pool.acquire("btap-cccccccccc").await.unwrap_err();
        assert!(matches!(err, AcquireTapError::Create { .. }), "{err}");
        assert!(matches!(
            pool.acquire("eth0").await,
            Err(AcquireTapError::InvalidName(_))
        ));
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn adopts_leftovers_and_deletes_surplus() {
        let ops = fake_with_bridge().await;
        for name in ["btap-pool-3", "btap-pool-7", "btap-pool-9"] {
            ops.insert_tap(name, "detached");
        }
        ops.insert_tap("btap-0123456789", BRIDGE);
        let pool = TapPool::start(ops.clone(), BRIDGE, 2);
        pool.wait_filled().await.unwrap();
        assert_eq!(pool.idle_taps(), vec!["btap-pool-3", "btap-pool-7"]);
        // Re-attached to the pool's bridge; surplus deleted; VM TAP untouched.
        let taps = ops.taps();
        assert_eq!(taps.get("btap-pool-3").map(String::as_str), Some(BRIDGE));
        assert!(!taps.contains_key("btap-pool-9"));
        assert!(taps.contains_key("btap-0123456789"));
        // New pool TAPs are numbered past the leftovers.
        pool.acquire("btap-dddddddddd").await.unwrap();
        pool.wait_filled().await.unwrap();
        assert_eq!(pool.idle_taps(), vec!["btap-pool-7", "btap-pool-10"]);
        pool.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_acquires_never_share_a_pool_tap() {
        let ops = fake_with_bridge().await;
        let pool = Arc::new(TapPool::start(ops.clone(), BRIDGE, 4));
        pool.wait_filled().await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                pool.acquire(&format!("btap-{i:010x}")).await.unwrap()
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let renames = ops.calls_of(Op::RenameTap);
        let sources: BTreeSet<_> = renames
            .iter()
            .map(|call| match call {
                Call::RenameTap { from, .. } => from.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sources.len(), renames.len(), "a pool TAP was renamed twice");
        let taps = ops.taps();
        for i in 0..16 {
            assert!(taps.contains_key(&format!("btap-{i:010x}")));
        }
        pool.shutdown().await;
        assert_eq!(ops.taps().len(), 16);
    }
}
