//! `image.bootstrap` against the fake bootstrap host: the image pipeline for
//! real (mkfs.ext4 into the test's state dir), debootstrap faked; every
//! failure leaves nothing registered, no staging files and no tree.

use std::path::PathBuf;

use banger_bootstrap::host::FakeOutcome;
use banger_model::image::{Image, ImageProfile, ImageSource};
use banger_rpc::request::ImageBootstrapParams;
use banger_rpc::{ErrorCode, Event, RpcError, StageStatus};
use bangerd::server::EventSink;
use bangerd::services::image_bootstrap;
use tokio_util::sync::CancellationToken;

use crate::harness::Harness;

fn params(distro: &str) -> ImageBootstrapParams {
    ImageBootstrapParams {
        distro: distro.into(),
        name: None,
        profile: None,
        packages: vec!["curl".into(), "htop".into()],
        mirror: Some("http://mirror.test/debian".into()),
        kernel_ref: None,
    }
}

/// A stand-in for the agent binary (the fake disk ops never read it into an
/// image, but the guest file list names it).
fn agent(h: &Harness) -> PathBuf {
    let path = h.daemon.layout.state_dir.join("fake-agent");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"\x7fELF agent").unwrap();
    path
}

async fn run(
    h: &Harness,
    params: ImageBootstrapParams,
    cancel: &CancellationToken,
) -> (Result<Image, RpcError>, Vec<Event>) {
    let (events, mut rx) = EventSink::recording();
    let agent = agent(h);
    let result = image_bootstrap::bootstrap_with_agent(&h.daemon, params, &agent, &events, cancel)
        .await
        .map_err(RpcError::from);
    let mut seen = Vec::new();
    while let Ok(frame) = rx.try_recv() {
        if let banger_rpc::frame::ResponseBody::Event(event) = frame.body {
            seen.push(event);
        }
    }
    (result, seen)
}

/// Whether staging empties (the build tree is removed in the background).
fn staging_is_empty(h: &Harness) -> bool {
    let empty = || {
        std::fs::read_dir(h.daemon.layout.staging_dir())
            .map(|mut entries| entries.next().is_none())
            .unwrap_or(true)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    empty()
}

fn bootstrapped_images(h: &Harness) -> Vec<Image> {
    h.daemon
        .store
        .list_images()
        .unwrap()
        .into_iter()
        .filter(|image| matches!(image.source, ImageSource::Bootstrap { .. }))
        .collect()
}

fn stages(events: &[Event], status: StageStatus) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Stage {
                stage, status: s, ..
            } if *s == status => Some(stage.clone()),
            _ => None,
        })
        .collect()
}

fn has_mkfs() -> bool {
    ["/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4"]
        .iter()
        .any(|path| std::path::Path::new(path).exists())
}

#[tokio::test]
async fn builds_registers_and_cleans_up() {
    if !has_mkfs() {
        eprintln!("skipped: mkfs.ext4 (e2fsprogs) is not installed");
        return;
    }
    let h = Harness::new().await;
    // A tree an earlier daemon left behind (killed mid-build) is swept.
    let stale = h.daemon.layout.staging_dir().join("0123.rootfs");
    std::fs::create_dir_all(stale.join("etc")).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let (result, events) = run(&h, params("debian:bookworm"), &CancellationToken::new()).await;
    let image = result.unwrap();
    assert_eq!(image.name.as_str(), "debian-bookworm");
    let ImageSource::Bootstrap {
        distro,
        mirror,
        profile,
        extra_packages,
        installed_size,
    } = &image.source
    else {
        panic!("not a bootstrap source: {:?}", image.source)
    };
    assert_eq!(distro, "debian:bookworm");
    assert_eq!(mirror, "http://mirror.test/debian");
    // The developer profile unless asked otherwise; --packages recorded.
    assert_eq!(*profile, ImageProfile::Developer);
    assert_eq!(extra_packages, &["curl", "htop"]);
    assert!(installed_size.is_some_and(|size| size.bytes() > 0));
    assert!(image.rootfs_path.is_file());
    assert!(image.work_seed_path.as_ref().unwrap().is_file());
    // The log moved into the image's directory.
    let log = h.daemon.layout.image_dir(&image.id).join("debootstrap.log");
    assert!(log.is_file());
    assert!(!image_bootstrap::log_path(&h.daemon, &image.id).exists());
    assert!(staging_is_empty(&h), "staging left behind");
    assert_eq!(
        stages(&events, StageStatus::Done),
        [
            "debootstrap_resolve",
            "debootstrap_download",
            "debootstrap_extract",
            "debootstrap_install",
            "clean_rootfs",
            "build_rootfs",
            "install_guest_files",
            "build_work_seed"
        ]
    );
    let calls = h.bootstrap.calls();
    assert_eq!(calls[0], "preflight debian:bookworm");
    assert_eq!(calls[1], format!("release {}", stale.display()));
    assert!(
        calls[2].contains(
            "openssh-server,iproute2,ca-certificates,git,procps,systemd-sysv,build-essential,"
        ),
        "{calls:?}"
    );
    assert!(calls[2].contains(",docker.io,"), "{calls:?}");
    assert!(calls[2].ends_with(",htop]"), "{calls:?}");
    assert!(calls[3].starts_with("release "), "{calls:?}");

    // The same name again is refused before anything runs.
    let (again, _) = run(&h, params("debian"), &CancellationToken::new()).await;
    assert_eq!(again.unwrap_err().code, ErrorCode::AlreadyExists);
    assert_eq!(h.bootstrap.calls().len(), 4);
}

/// A tree given to the daemon's user by banger-helper: the owners its files
/// had are put back into rootfs.ext4 after it is built.
#[tokio::test]
async fn owners_of_a_given_tree_are_put_back_in_the_image() {
    if !has_mkfs() {
        eprintln!("skipped: mkfs.ext4 (e2fsprogs) is not installed");
        return;
    }
    let h = Harness::new().await;
    *h.bootstrap.owners.lock().unwrap() = vec![banger_bootstrap::TreeOwner {
        path: "etc/hostname".into(),
        uid: 0,
        gid: 42,
    }];
    let (result, _) = run(&h, params("debian:bookworm"), &CancellationToken::new()).await;
    let image = result.unwrap();
    let restored = h.disk.calls().into_iter().find_map(|call| match call {
        banger_disk::fake::DiskCall::ApplyEdits { image, edits } => edits
            .edits()
            .contains(&banger_disk::Ext4Edit::Chown {
                path: "/etc/hostname".into(),
                uid: 0,
                gid: 42,
            })
            .then_some(image),
        _ => None,
    });
    let image_file = restored.expect("an edit restores the owner");
    assert!(image_file.ends_with("rootfs.ext4"), "{image_file:?}");
    assert!(image.rootfs_path.is_file());
}

/// `--profile minimal` keeps the small set; `--packages` still adds.
#[tokio::test]
async fn the_minimal_profile_is_the_base_set() {
    if !has_mkfs() {
        eprintln!("skipped: mkfs.ext4 (e2fsprogs) is not installed");
        return;
    }
    let h = Harness::new().await;
    let mut minimal = params("debian:bookworm");
    minimal.profile = Some(ImageProfile::Minimal);
    let (result, _) = run(&h, minimal, &CancellationToken::new()).await;
    let image = result.unwrap();
    assert!(
        matches!(
            image.source,
            ImageSource::Bootstrap {
                profile: ImageProfile::Minimal,
                ..
            }
        ),
        "{:?}",
        image.source
    );
    let calls = h.bootstrap.calls();
    let debootstrap = calls
        .iter()
        .find(|call| call.starts_with("debootstrap "))
        .unwrap();
    assert!(
        debootstrap.ends_with(
            "[openssh-server,iproute2,ca-certificates,git,procps,systemd-sysv,curl,htop]"
        ),
        "{debootstrap}"
    );
}

#[tokio::test]
async fn a_failed_debootstrap_leaves_nothing_and_names_its_log() {
    let h = Harness::new().await;
    h.bootstrap
        .set_outcome(FakeOutcome::Fail("Couldn't find these debs: nope".into()));
    let (result, events) = run(&h, params("debian"), &CancellationToken::new()).await;
    let err = result.unwrap_err();
    assert!(err.message.contains("Couldn't find these debs"), "{err:?}");
    let hint = err.hint.unwrap();
    assert!(hint.contains("image-bootstrap-"), "{hint}");
    assert!(bootstrapped_images(&h).is_empty());
    assert!(staging_is_empty(&h), "staging left behind");
    // The failed stage is reported as failed; the log is kept.
    assert!(!stages(&events, StageStatus::Failed).is_empty());
    let log = PathBuf::from(hint.rsplit("log: ").next().unwrap());
    assert!(log.is_file(), "{}", log.display());
    assert!(
        h.bootstrap
            .calls()
            .iter()
            .any(|call| call.starts_with("release "))
    );
}

#[tokio::test]
async fn a_mount_that_will_not_go_keeps_the_tree_and_registers_nothing() {
    if !has_mkfs() {
        eprintln!("skipped: mkfs.ext4 (e2fsprogs) is not installed");
        return;
    }
    let h = Harness::new().await;
    h.bootstrap.stuck_mounts.lock().unwrap().push("proc".into());
    let (result, _) = run(&h, params("debian"), &CancellationToken::new()).await;
    let err = result.unwrap_err();
    assert!(err.message.contains("still under"), "{err:?}");
    assert!(err.hint.unwrap().contains("umount"));
    assert!(bootstrapped_images(&h).is_empty());
    // The image files are gone; the tree with its (pretend) mount is not
    // deleted, since deleting it would reach into the mount.
    let left: Vec<String> = std::fs::read_dir(h.daemon.layout.staging_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with(".rootfs"), "{left:?}");
}

#[tokio::test]
async fn cancelling_kills_debootstrap_and_rolls_back() {
    let h = Harness::new().await;
    h.bootstrap.set_outcome(FakeOutcome::Hang);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        trigger.cancel();
    });
    let (result, _) = run(&h, params("debian"), &cancel).await;
    assert_eq!(result.unwrap_err().code, ErrorCode::Cancelled);
    assert!(bootstrapped_images(&h).is_empty());
    assert!(staging_is_empty(&h), "staging left behind");
}

#[tokio::test]
async fn missing_debootstrap_is_a_precondition_with_the_fix() {
    let h = Harness::new().await;
    *h.bootstrap.preflight_failure.lock().unwrap() = Some("debootstrap".into());
    let (result, _) = run(&h, params("debian"), &CancellationToken::new()).await;
    let err = result.unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition);
    assert!(
        err.message.contains("debootstrap is not installed"),
        "{err:?}"
    );
    assert!(err.hint.unwrap().contains("apt-get install debootstrap"));
    assert_eq!(h.bootstrap.calls(), ["preflight debian:bookworm"]);
    assert!(bootstrapped_images(&h).is_empty());
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_runs() {
    let h = Harness::new().await;
    let cases = [
        (params("gentoo"), "unknown distribution"),
        (params("debian:hamm"), "unknown debian release"),
        (
            ImageBootstrapParams {
                mirror: Some("ftp://x".into()),
                ..params("debian")
            },
            "not an http",
        ),
        (
            ImageBootstrapParams {
                packages: vec!["bad;name".into()],
                ..params("debian")
            },
            "not a Debian package name",
        ),
        (
            ImageBootstrapParams {
                name: Some("Bad_Name".into()),
                ..params("debian")
            },
            "contains",
        ),
    ];
    for (params, expected) in cases {
        let (result, _) = run(&h, params, &CancellationToken::new()).await;
        let err = result.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{err:?}");
        assert!(err.message.contains(expected), "{expected}: {err:?}");
    }
    assert!(h.bootstrap.calls().is_empty());
}
