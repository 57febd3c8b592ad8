//! The store against a real SQLite file.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use banger_model::image::{Image, ImageSource};
use banger_model::kernel::{Kernel, KernelSource};
use banger_model::vm::{NetworkAllocation, StorageStrategy, Vm, VmState, VmmKind, WorkspaceInfo};
use banger_model::{ByteSize, Id, Name, VmSpec};
use banger_store::{Store, StoreError};

fn kernel(name: &str) -> Kernel {
    Kernel {
        id: Id::generate(),
        name: Name::parse(name).unwrap(),
        vmlinux_path: "/k/vmlinux".into(),
        initrd_path: None,
        version: Some("6.1.0".into()),
        source: KernelSource::Import {
            path: "/src".into(),
        },
        created_at: jiff::Timestamp::now(),
    }
}

fn image(name: &str, kernel: Option<&Kernel>) -> Image {
    Image {
        id: Id::generate(),
        name: Name::parse(name).unwrap(),
        kernel_id: kernel.map(|k| k.id.clone()),
        kernel_name: kernel.map(|k| k.name.to_string()),
        rootfs_path: "/i/rootfs.ext4".into(),
        work_seed_path: Some("/i/work-seed.ext4".into()),
        rootfs_size: ByteSize::gib(1),
        source: ImageSource::Pull {
            reference: "docker.io/library/debian:bookworm".into(),
            manifest_digest: "sha256:aa".into(),
            layer_digests: vec!["sha256:bb".into()],
        },
        is_default: false,
        created_at: jiff::Timestamp::now(),
    }
}

fn vm(name: &str, image: &Image, ip: Ipv4Addr) -> Vm {
    let now = jiff::Timestamp::now();
    Vm {
        id: Id::generate(),
        name: Name::parse(name).unwrap(),
        image_id: image.id.clone(),
        image_name: image.name.to_string(),
        state: VmState::Creating,
        spec: VmSpec {
            vcpu: 2,
            memory_mib: 1024,
            disk_size: ByteSize::gib(8),
        },
        nat: true,
        vmm: VmmKind::Sim,
        accel: None,
        network: NetworkAllocation {
            ip,
            prefix_len: 24,
            gateway: Ipv4Addr::new(172, 30, 0, 1),
            mac: NetworkAllocation::mac_for(ip),
        },
        tap: None,
        storage: StorageStrategy::Reflink,
        dir: PathBuf::from(format!("/state/vms/{name}")),
        pid: None,
        vsock_cid: 3,
        created_at: now,
        updated_at: now,
        started_at: None,
        last_error: None,
        workspace: None,
        ports: Vec::new(),
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("banger.db")).unwrap();
    (dir, store)
}

#[test]
fn records_round_trip_with_timestamps_at_millisecond_precision() {
    let (_dir, store) = open();
    let k = kernel("k1");
    store.insert_kernel(&k).unwrap();
    let mut i = image("debian", Some(&k));
    store.insert_image(&i).unwrap();
    let mut v = vm("web", &i, Ipv4Addr::new(172, 30, 0, 2));
    store.insert_vm(&v).unwrap();

    let got = store.get_kernel(&k.id).unwrap().unwrap();
    assert_eq!(got.name, k.name);
    assert_eq!(
        got.created_at.as_millisecond(),
        k.created_at.as_millisecond()
    );
    i.created_at = store.get_image(&i.id).unwrap().unwrap().created_at;
    assert_eq!(store.get_image(&i.id).unwrap().unwrap(), i);

    v.state = VmState::Running;
    v.pid = Some(1234);
    v.tap = Some("btap-0123456789".into());
    v.started_at = Some(jiff::Timestamp::now());
    v.workspace = Some(WorkspaceInfo {
        host_path: "/src/repo".into(),
        guest_path: "/root/repo".into(),
        base_commit: "abc".into(),
        branch: None,
        head_commit: Some("abc".into()),
    });
    store.update_vm(&mut v).unwrap();
    let got = store.get_vm(&v.id).unwrap().unwrap();
    assert_eq!(got.state, VmState::Running);
    assert_eq!(got.pid, Some(1234));
    assert_eq!(got.image_name, "debian");
    assert_eq!(got.network, v.network);
    assert_eq!(got.workspace, v.workspace);
    assert_eq!(store.list_vms().unwrap().len(), 1);
    assert_eq!(
        store.used_ips().unwrap(),
        vec![Ipv4Addr::new(172, 30, 0, 2)]
    );
    assert_eq!(store.used_cids().unwrap(), vec![3]);
}

/// Migration V2: qemu VMs and their accelerator are stored; rows written
/// under V1 survive the table rebuild.
#[test]
fn qemu_vms_keep_their_accelerator_and_v1_rows_survive_the_rebuild() {
    use banger_model::vm::Accel;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("banger.db");
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        banger_store::schema::migrations()
            .to_version(&mut conn, 1)
            .unwrap();
        conn.execute_batch(
            "INSERT INTO images (id, name, rootfs_path, rootfs_size, source, created_at) \
             VALUES ('img1', 'debian', '/r.ext4', 1, '{\"kind\":\"import\",\"path\":\"/r\"}', 0); \
             INSERT INTO vms (id, name, image_id, state, vcpu, memory_mib, disk_size, nat, vmm, \
             dir, created_at, updated_at) VALUES ('vm1', 'old', 'img1', 'stopped', 1, 128, 1, 0, \
             'sim', '/d', 0, 0);",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (vmm, accel): (String, Option<String>) = conn
        .query_row("SELECT vmm, accel FROM vms WHERE id = 'vm1'", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!((vmm.as_str(), accel), ("sim", None));

    let k = kernel("k1");
    store.insert_kernel(&k).unwrap();
    let i = image("bookworm", Some(&k));
    store.insert_image(&i).unwrap();
    let mut q = vm("q", &i, Ipv4Addr::new(172, 30, 0, 3));
    q.vmm = VmmKind::Qemu;
    q.vsock_cid = 4;
    store.insert_vm(&q).unwrap();
    q.accel = Some(Accel::Tcg);
    store.update_vm(&mut q).unwrap();
    let got = store.get_vm(&q.id).unwrap().unwrap();
    assert_eq!(got.vmm, VmmKind::Qemu);
    assert_eq!(got.accel, Some(Accel::Tcg));
}

#[test]
fn names_are_unique_per_table() {
    let (_dir, store) = open();
    let i = image("debian", None);
    store.insert_image(&i).unwrap();
    let err = store.insert_image(&image("debian", None)).unwrap_err();
    assert!(
        matches!(err, StoreError::NameTaken { kind: "image", .. }),
        "{err:?}"
    );
    store
        .insert_vm(&vm("web", &i, Ipv4Addr::new(172, 30, 0, 10)))
        .unwrap();
    let mut duplicate = vm("web", &i, Ipv4Addr::new(172, 30, 0, 11));
    duplicate.vsock_cid = 4;
    let err = store.insert_vm(&duplicate).unwrap_err();
    assert!(
        matches!(err, StoreError::NameTaken { kind: "VM", .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "VM named \"web\" already exists");
}

#[test]
fn guest_ips_cannot_be_double_allocated() {
    let (_dir, store) = open();
    let i = image("debian", None);
    store.insert_image(&i).unwrap();
    let ip = Ipv4Addr::new(172, 30, 0, 9);
    store.insert_vm(&vm("a", &i, ip)).unwrap();
    let mut second = vm("b", &i, ip);
    second.vsock_cid = 4;
    assert!(store.insert_vm(&second).is_err());
}

#[test]
fn images_in_use_and_kernels_in_use_cannot_be_deleted() {
    let (_dir, store) = open();
    let k = kernel("k1");
    store.insert_kernel(&k).unwrap();
    let i = image("debian", Some(&k));
    store.insert_image(&i).unwrap();
    let v = vm("web", &i, Ipv4Addr::new(172, 30, 0, 12));
    store.insert_vm(&v).unwrap();

    assert!(matches!(
        store.delete_image(&i.id),
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.delete_kernel(&k.id),
        Err(StoreError::Conflict { .. })
    ));
    store.delete_vm(&v.id).unwrap();
    store.delete_image(&i.id).unwrap();
    store.delete_kernel(&k.id).unwrap();
    assert!(matches!(
        store.delete_vm(&v.id),
        Err(StoreError::Missing { .. })
    ));
}

#[test]
fn a_vm_needs_an_existing_image() {
    let (_dir, store) = open();
    let ghost = image("ghost", None);
    let err = store
        .insert_vm(&vm("web", &ghost, Ipv4Addr::new(172, 30, 0, 13)))
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
}

#[test]
fn only_one_default_image() {
    let (_dir, store) = open();
    let a = image("a", None);
    let b = image("b", None);
    store.insert_image(&a).unwrap();
    store.insert_image(&b).unwrap();
    assert!(store.default_image().unwrap().is_none());
    store.set_default_image(&a.id).unwrap();
    store.set_default_image(&b.id).unwrap();
    assert_eq!(store.default_image().unwrap().unwrap().name.as_str(), "b");
    let defaults = store
        .list_images()
        .unwrap()
        .iter()
        .filter(|i| i.is_default)
        .count();
    assert_eq!(defaults, 1);
    assert!(store.set_default_image(&Id::generate()).is_err());
    assert_eq!(store.default_image().unwrap().unwrap().name.as_str(), "b");
}

#[test]
fn an_image_is_updated_in_place_keeping_id_name_and_default() {
    let (_dir, store) = open();
    let k = kernel("k");
    store.insert_kernel(&k).unwrap();
    let mut a = image("a", None);
    store.insert_image(&a).unwrap();
    store.set_default_image(&a.id).unwrap();
    a.kernel_id = Some(k.id.clone());
    a.rootfs_size = ByteSize::gib(2);
    a.source = ImageSource::Pull {
        reference: "docker.io/library/debian:bookworm".into(),
        manifest_digest: "sha256:cc".into(),
        layer_digests: vec!["sha256:dd".into()],
    };
    store.update_image(&a).unwrap();
    let stored = store.get_image(&a.id).unwrap().unwrap();
    assert_eq!(stored.name.as_str(), "a");
    assert!(stored.is_default);
    assert_eq!(stored.kernel_name.as_deref(), Some("k"));
    assert_eq!(stored.rootfs_size, ByteSize::gib(2));
    assert_eq!(stored.source, a.source);
    let missing = image("missing", None);
    assert!(matches!(
        store.update_image(&missing),
        Err(StoreError::Missing { .. })
    ));
    let mut bad_kernel = a.clone();
    bad_kernel.kernel_id = Some(Id::generate());
    assert!(matches!(
        store.update_image(&bad_kernel),
        Err(StoreError::Conflict { .. })
    ));
}

#[test]
fn a_second_connection_sees_committed_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("banger.db");
    let first = Store::open(&path).unwrap();
    first.insert_kernel(&kernel("shared")).unwrap();
    let second = Store::open(&path).unwrap();
    assert_eq!(second.list_kernels().unwrap().len(), 1);
}
