//! Versioned migrations. Append new migrations; never edit a released one.

use rusqlite_migration::{M, Migrations};

const V1: &str = r#"
CREATE TABLE kernels (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    vmlinux_path TEXT NOT NULL,
    initrd_path  TEXT,
    version      TEXT,
    source       TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE images (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    kernel_id      TEXT REFERENCES kernels(id) ON DELETE RESTRICT,
    rootfs_path    TEXT NOT NULL,
    work_seed_path TEXT,
    rootfs_size    INTEGER NOT NULL CHECK (rootfs_size >= 0),
    source         TEXT NOT NULL,
    is_default     INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    created_at     INTEGER NOT NULL
);
CREATE UNIQUE INDEX images_single_default ON images(is_default) WHERE is_default = 1;

CREATE TABLE vms (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    image_id    TEXT NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
    state       TEXT NOT NULL CHECK (state IN
                    ('creating', 'starting', 'running', 'stopping', 'stopped', 'error')),
    vcpu        INTEGER NOT NULL CHECK (vcpu > 0),
    memory_mib  INTEGER NOT NULL CHECK (memory_mib > 0),
    disk_size   INTEGER NOT NULL CHECK (disk_size > 0),
    nat         INTEGER NOT NULL CHECK (nat IN (0, 1)),
    vmm         TEXT NOT NULL CHECK (vmm IN ('firecracker', 'sim')),
    guest_ip    TEXT UNIQUE,
    prefix_len  INTEGER,
    gateway     TEXT,
    mac         TEXT,
    tap         TEXT UNIQUE,
    storage     TEXT CHECK (storage IN ('reflink', 'dm_snapshot', 'copy')),
    dir         TEXT NOT NULL,
    pid         INTEGER,
    vsock_cid   INTEGER UNIQUE,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    started_at  INTEGER,
    last_error  TEXT,
    workspace   TEXT
);
CREATE INDEX vms_image ON vms(image_id);
"#;

/// VM states and VMM kinds grow: `deleting` (a delete a crash interrupted
/// is finished at start-up) and the `qemu` engine. SQLite cannot change a
/// CHECK constraint, so the table is rebuilt.
const V2: &str = r#"
CREATE TABLE vms_v2 (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    image_id    TEXT NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
    state       TEXT NOT NULL CHECK (state IN
                    ('creating', 'starting', 'running', 'stopping', 'stopped', 'error', 'deleting')),
    vcpu        INTEGER NOT NULL CHECK (vcpu > 0),
    memory_mib  INTEGER NOT NULL CHECK (memory_mib > 0),
    disk_size   INTEGER NOT NULL CHECK (disk_size > 0),
    nat         INTEGER NOT NULL CHECK (nat IN (0, 1)),
    vmm         TEXT NOT NULL CHECK (vmm IN ('firecracker', 'sim', 'qemu')),
    guest_ip    TEXT UNIQUE,
    prefix_len  INTEGER,
    gateway     TEXT,
    mac         TEXT,
    tap         TEXT UNIQUE,
    storage     TEXT CHECK (storage IN ('reflink', 'dm_snapshot', 'copy')),
    dir         TEXT NOT NULL,
    pid         INTEGER,
    vsock_cid   INTEGER UNIQUE,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    started_at  INTEGER,
    last_error  TEXT,
    workspace   TEXT
);
INSERT INTO vms_v2 SELECT * FROM vms;
DROP TABLE vms;
ALTER TABLE vms_v2 RENAME TO vms;
CREATE INDEX vms_image ON vms(image_id);
"#;

/// qemu VMs record what ran their vCPUs (`kvm` or `tcg`).
const V3: &str = r#"
ALTER TABLE vms ADD COLUMN accel TEXT CHECK (accel IN ('kvm', 'tcg'));
"#;

/// Published ports (`-p`), as JSON: `[{"host_addr":…,"host_port":…,"guest_port":…}]`.
const V4: &str = r#"
ALTER TABLE vms ADD COLUMN ports TEXT NOT NULL DEFAULT '[]';
"#;

pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(V1), M::up(V2), M::up(V3), M::up(V4)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
    }

    #[test]
    fn migrating_twice_is_a_no_op_and_records_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/banger.db");
        drop(crate::Store::open(&path).unwrap());
        drop(crate::Store::open(&path).unwrap());
        let conn = crate::open_connection(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, 4);
        let journal: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        let fks: i64 = conn
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .unwrap();
        assert_eq!(fks, 1);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banger.db");
        drop(crate::Store::open(&path).unwrap());
        let conn = crate::open_connection(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = crate::Store::open(&path).unwrap_err();
        assert!(
            matches!(err, crate::OpenStoreError::Migrate { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_v1_database_keeps_its_vms_and_learns_the_new_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banger.db");
        let mut conn = crate::open_connection(&path).unwrap();
        Migrations::new(vec![M::up(V1)])
            .to_latest(&mut conn)
            .unwrap();
        conn.execute_batch(
            "INSERT INTO images (id, name, rootfs_path, rootfs_size, source, created_at)
                 VALUES ('i1', 'debian', '/r', 1, 'register', 0);
             INSERT INTO vms (id, name, image_id, state, vcpu, memory_mib, disk_size, nat, vmm,
                              guest_ip, prefix_len, gateway, mac, storage, dir, vsock_cid,
                              created_at, updated_at)
                 VALUES ('v1', 'web', 'i1', 'stopped', 2, 512, 1024, 0, 'sim',
                         '172.30.0.2', 24, '172.30.0.1', '06:00:ac:1e:00:02', 'copy', '/d', 3,
                         0, 0);",
        )
        .unwrap();
        drop(conn);
        let store = crate::Store::open(&path).unwrap();
        let mut vms = store.list_vms().unwrap();
        assert_eq!(vms.len(), 1);
        assert_eq!(vms[0].name.as_str(), "web");
        vms[0].state = banger_model::vm::VmState::Deleting;
        vms[0].vmm = banger_model::vm::VmmKind::Sim;
        store.update_vm(&mut vms[0]).unwrap();
        assert_eq!(
            store.list_vms().unwrap()[0].state,
            banger_model::vm::VmState::Deleting
        );
        let conn = crate::open_connection(&path).unwrap();
        conn.execute("UPDATE vms SET vmm = 'qemu'", []).unwrap();
    }
    #[test]
    fn a_vm_row_without_its_address_is_corrupt_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banger.db");
        drop(crate::Store::open(&path).unwrap());
        let conn = crate::open_connection(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO images (id, name, rootfs_path, rootfs_size, source, created_at)
                 VALUES ('i1', 'debian', '/r', 1, 'register', 0);
             INSERT INTO vms (id, name, image_id, state, vcpu, memory_mib, disk_size, nat, vmm,
                              guest_ip, storage, dir, vsock_cid, created_at, updated_at)
                 VALUES ('v1', 'web', 'i1', 'stopped', 2, 512, 1024, 0, 'sim',
                         '172.30.0.2', 'copy', '/d', 3, 0, 0);",
        )
        .unwrap();
        drop(conn);
        let store = crate::Store::open(&path).unwrap();
        let err = store.list_vms().unwrap_err();
        assert!(err.to_string().contains("network"), "{err}");
    }
}
