//! Events streamed while a long request runs: what it settled, and its
//! progress.

use banger_model::defaults::ResolvedSpec;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Started,
    Done,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// What the new VM gets and where each setting came from: the first
    /// event of `vm.create`, before any stage.
    Spec { spec: ResolvedSpec },
    /// A named step of an operation (`prepare_disks`, `start_vmm`, …).
    Stage {
        stage: String,
        status: StageStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        elapsed_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Measurable progress of a transfer or build.
    Progress {
        task: String,
        current: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
        /// `bytes` or `items`.
        unit: String,
        /// More of the same, for people: `4120 of 10213 files`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A message for the user, e.g. a warning.
    Log { level: String, message: String },
}
