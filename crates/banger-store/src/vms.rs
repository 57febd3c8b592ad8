//! The `vms` table.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use banger_model::vm::{
    Accel, NetworkAllocation, StorageStrategy, Vm, VmState, VmmKind, WorkspaceInfo,
};
use banger_model::{ByteSize, Id, Name, VmSpec};
use rusqlite::{OptionalExtension, Row, params};

use crate::{Store, StoreError, from_millis, is_foreign_key_violation, map_unique, to_millis};

const COLUMNS: &str = "v.id, v.name, v.image_id, i.name, v.state, v.vcpu, v.memory_mib, \
    v.disk_size, v.nat, v.vmm, v.guest_ip, v.prefix_len, v.gateway, v.mac, v.tap, v.storage, \
    v.dir, v.pid, v.vsock_cid, v.created_at, v.updated_at, v.started_at, v.last_error, v.workspace, \
    v.accel, v.ports";
const FROM: &str = "vms v JOIN images i ON i.id = v.image_id";

impl Store {
    /// Inserts a new VM; its name must be free.
    pub fn insert_vm(&self, vm: &Vm) -> Result<(), StoreError> {
        let result = self.conn().execute(
            "INSERT INTO vms (id, name, image_id, state, vcpu, memory_mib, disk_size, nat, vmm, \
             guest_ip, prefix_len, gateway, mac, tap, storage, dir, pid, vsock_cid, created_at, \
             updated_at, started_at, last_error, workspace, accel, ports) VALUES (?1, ?2, ?3, \
             ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, \
             ?22, ?23, ?24, ?25)",
            params![
                vm.id.as_str(),
                vm.name.as_str(),
                vm.image_id.as_str(),
                vm.state.as_str(),
                vm.spec.vcpu,
                vm.spec.memory_mib,
                vm.spec.disk_size.bytes() as i64,
                vm.nat,
                vm.vmm.as_str(),
                vm.network.ip.to_string(),
                vm.network.prefix_len,
                vm.network.gateway.to_string(),
                vm.network.mac.clone(),
                vm.tap,
                vm.storage.as_str(),
                vm.dir.to_string_lossy(),
                vm.pid,
                vm.vsock_cid,
                to_millis(vm.created_at),
                to_millis(vm.updated_at),
                vm.started_at.map(to_millis),
                vm.last_error,
                workspace_json(vm),
                vm.accel.map(Accel::as_str),
                ports_json(vm),
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_foreign_key_violation(&err) => Err(StoreError::Conflict {
                what: "the VM's image does not exist".into(),
            }),
            Err(err) => Err(map_unique(err, "VM", vm.name.as_str())),
        }
    }

    /// Writes every mutable field of `vm` and stamps `updated_at`.
    pub fn update_vm(&self, vm: &mut Vm) -> Result<(), StoreError> {
        vm.updated_at = jiff::Timestamp::now();
        let changed = self.conn().execute(
            "UPDATE vms SET state = ?2, vcpu = ?3, memory_mib = ?4, disk_size = ?5, nat = ?6, \
             guest_ip = ?7, prefix_len = ?8, gateway = ?9, mac = ?10, tap = ?11, storage = ?12, \
             pid = ?13, vsock_cid = ?14, updated_at = ?15, started_at = ?16, last_error = ?17, \
             workspace = ?18, accel = ?19, ports = ?20 WHERE id = ?1",
            params![
                vm.id.as_str(),
                vm.state.as_str(),
                vm.spec.vcpu,
                vm.spec.memory_mib,
                vm.spec.disk_size.bytes() as i64,
                vm.nat,
                vm.network.ip.to_string(),
                vm.network.prefix_len,
                vm.network.gateway.to_string(),
                vm.network.mac.clone(),
                vm.tap,
                vm.storage.as_str(),
                vm.pid,
                vm.vsock_cid,
                to_millis(vm.updated_at),
                vm.started_at.map(to_millis),
                vm.last_error,
                workspace_json(vm),
                vm.accel.map(Accel::as_str),
                ports_json(vm),
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::Missing {
                kind: "VM",
                id: vm.id.to_string(),
            });
        }
        Ok(())
    }

    pub fn list_vms(&self) -> Result<Vec<Vm>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM {FROM} ORDER BY v.created_at, v.name"
        ))?;
        let rows = statement.query_map([], read_row)?;
        rows.map(|row| row?).collect()
    }

    pub fn get_vm(&self, id: &Id) -> Result<Option<Vm>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM {FROM} WHERE v.id = ?1"),
                [id.as_str()],
                read_row,
            )
            .optional()?;
        row.transpose()
    }

    pub fn delete_vm(&self, id: &Id) -> Result<(), StoreError> {
        let changed = self
            .conn()
            .execute("DELETE FROM vms WHERE id = ?1", [id.as_str()])?;
        if changed == 0 {
            return Err(StoreError::Missing {
                kind: "VM",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    /// Guest IPs allocated to any VM.
    pub fn used_ips(&self) -> Result<Vec<Ipv4Addr>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare("SELECT guest_ip FROM vms WHERE guest_ip IS NOT NULL")?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        rows.map(|row| {
            let raw = row?;
            raw.parse().map_err(|_| StoreError::Corrupt {
                what: "guest_ip",
                detail: raw.clone(),
            })
        })
        .collect()
    }

    /// vsock context ids in use.
    pub fn used_cids(&self) -> Result<Vec<u32>, StoreError> {
        let conn = self.conn();
        let mut statement =
            conn.prepare("SELECT vsock_cid FROM vms WHERE vsock_cid IS NOT NULL")?;
        let rows = statement.query_map([], |row| row.get::<_, u32>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn workspace_json(vm: &Vm) -> Option<String> {
    vm.workspace
        .as_ref()
        .map(|ws| serde_json::to_string(ws).expect("workspace info serialises"))
}

fn ports_json(vm: &Vm) -> String {
    serde_json::to_string(&vm.ports).expect("ports serialise")
}

fn corrupt(what: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

fn read_row(row: &Row<'_>) -> rusqlite::Result<Result<Vm, StoreError>> {
    let id: String = row.get(0)?;
    let name: String = row.get(1)?;
    let image_id: String = row.get(2)?;
    let image_name: String = row.get(3)?;
    let state: String = row.get(4)?;
    let vcpu: u32 = row.get(5)?;
    let memory_mib: u32 = row.get(6)?;
    let disk_size: i64 = row.get(7)?;
    let nat: bool = row.get(8)?;
    let vmm: String = row.get(9)?;
    let guest_ip: Option<String> = row.get(10)?;
    let prefix_len: Option<u8> = row.get(11)?;
    let gateway: Option<String> = row.get(12)?;
    let mac: Option<String> = row.get(13)?;
    let tap: Option<String> = row.get(14)?;
    let storage: Option<String> = row.get(15)?;
    let dir: String = row.get(16)?;
    let pid: Option<u32> = row.get(17)?;
    let vsock_cid: Option<u32> = row.get(18)?;
    let created_at: i64 = row.get(19)?;
    let updated_at: i64 = row.get(20)?;
    let started_at: Option<i64> = row.get(21)?;
    let last_error: Option<String> = row.get(22)?;
    let workspace: Option<String> = row.get(23)?;
    let accel: Option<String> = row.get(24)?;
    let ports: String = row.get(25)?;
    Ok((|| {
        let network = match (guest_ip, prefix_len, gateway, mac) {
            (Some(ip), Some(prefix_len), Some(gateway), Some(mac)) => NetworkAllocation {
                ip: ip.parse().map_err(|_| corrupt("guest_ip", &ip))?,
                prefix_len,
                gateway: gateway.parse().map_err(|_| corrupt("gateway", &gateway))?,
                mac,
            },
            _ => {
                return Err(corrupt(
                    "network",
                    "an address, prefix, gateway or MAC is missing",
                ));
            }
        };
        Ok(Vm {
            id: Id::from_stored(id),
            name: Name::parse(&name).map_err(|err| corrupt("VM name", err))?,
            image_id: Id::from_stored(image_id),
            image_name,
            state: VmState::parse(&state).ok_or_else(|| corrupt("VM state", &state))?,
            spec: VmSpec {
                vcpu,
                memory_mib,
                disk_size: ByteSize(disk_size.max(0) as u64),
            },
            nat,
            vmm: VmmKind::parse(&vmm).ok_or_else(|| corrupt("VMM kind", &vmm))?,
            accel: accel
                .map(|raw| Accel::parse(&raw).ok_or_else(|| corrupt("accel", &raw)))
                .transpose()?,
            network,
            tap,
            storage: storage
                .map(|raw| StorageStrategy::parse(&raw).ok_or_else(|| corrupt("storage", &raw)))
                .transpose()?
                .ok_or_else(|| corrupt("storage", "missing"))?,
            dir: PathBuf::from(dir),
            pid,
            vsock_cid: vsock_cid.ok_or_else(|| corrupt("vsock_cid", "missing"))?,
            created_at: from_millis("VM created_at", created_at)?,
            updated_at: from_millis("VM updated_at", updated_at)?,
            started_at: started_at
                .map(|ms| from_millis("VM started_at", ms))
                .transpose()?,
            last_error,
            workspace: workspace
                .map(|raw| {
                    serde_json::from_str::<WorkspaceInfo>(&raw)
                        .map_err(|err| corrupt("workspace", err))
                })
                .transpose()?,
            ports: serde_json::from_str(&ports).map_err(|err| corrupt("ports", err))?,
        })
    })())
}
