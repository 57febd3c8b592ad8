use std::fs::File;
use std::os::fd::AsRawFd;

use banger_net::{CreateTapError, DeleteTapError, NetOps, RealNetOps, RenameTapError, TapOwner};

use crate::support::{in_netns, link_line, links_with_prefix, random_hex, root_or_skip};

fn tap(tag: &str) -> String {
    // btap- + 10 characters, like a VM TAP, random so names never repeat.
    format!("btap-{tag}{}", random_hex(10 - tag.len()))
}

async fn bridge(ops: &RealNetOps) -> String {
    let name = format!("br-{}", random_hex(8));
    ops.ensure_bridge(&name, "172.30.0.1/24".parse().unwrap())
        .await
        .unwrap();
    name
}

/// Opens TAP `name` the way Firecracker does: TUNSETIFF with
/// IFF_TAP | IFF_NO_PI | IFF_VNET_HDR on /dev/net/tun.
fn open_like_firecracker(name: &str) -> std::io::Result<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: `ifreq` is plain data; all-zero bytes are a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *slot = *byte as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: the descriptor is open for the whole call and `ifr` is a valid
    // `ifreq` that TUNSETIFF may read and write.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::TUNSETIFF,
            &mut ifr as *mut libc::ifreq,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

#[test]
fn tap_is_created_persistent_attached_up_and_deleted() {
    if !root_or_skip("tap_is_created_persistent_attached_up_and_deleted") {
        return;
    }
    in_netns(|| async {
        let ops = RealNetOps::connect().unwrap();
        let br = bridge(&ops).await;
        let name = tap("");

        assert!(
            ops.create_tap(&name, &br).await.unwrap(),
            "first call creates"
        );
        let line = link_line(&name).expect("TAP exists after our descriptor closed");
        assert!(line.contains(&format!("master {br}")), "{line}");
        assert!(line.contains(",UP"), "{line}");
        assert!(line.contains("tun type tap"), "{line}");
        assert!(line.contains("persist on"), "{line}");
        assert!(line.contains("pi off"), "{line}");
        assert!(line.contains("vnet_hdr on"), "{line}");

        // Idempotent: an existing idle TAP is adopted, still attached.
        assert!(!ops.create_tap(&name, &br).await.unwrap());
        assert!(link_line(&name).unwrap().contains(&format!("master {br}")));

        assert_eq!(ops.list_links("btap-").await.unwrap(), vec![name.clone()]);
        assert_eq!(ops.list_links(&br).await.unwrap(), vec![br.clone()]);

        assert!(ops.delete_tap(&name).await.unwrap());
        assert_eq!(link_line(&name), None);
        assert!(
            !ops.delete_tap(&name).await.unwrap(),
            "already gone is fine"
        );
        assert!(ops.list_links("btap-").await.unwrap().is_empty());
    });
}

#[test]
fn the_vmm_can_open_the_tap_by_name() {
    if !root_or_skip("the_vmm_can_open_the_tap_by_name") {
        return;
    }
    in_netns(|| async {
        let ops = RealNetOps::connect().unwrap();
        let br = bridge(&ops).await;
        let name = tap("");
        ops.create_tap(&name, &br).await.unwrap();

        let vmm = open_like_firecracker(&name).expect("Firecracker-style open");
        let line = link_line(&name).unwrap();
        assert!(line.contains(&format!("master {br}")), "{line}");
        // While the VMM holds it, nobody else can take it over.
        let err = ops.create_tap(&name, &br).await.unwrap_err();
        assert!(matches!(err, CreateTapError::Tun { .. }), "{err:?}");
        drop(vmm);
        // Closing the VMM's descriptor leaves the persistent TAP in place.
        assert!(link_line(&name).is_some());
        assert!(ops.delete_tap(&name).await.unwrap());
    });
}

#[test]
fn a_tap_made_for_a_user_carries_its_owner_and_alias() {
    if !root_or_skip("a_tap_made_for_a_user_carries_its_owner_and_alias") {
        return;
    }
    in_netns(|| async {
        let ops = RealNetOps::connect().unwrap();
        let br = bridge(&ops).await;
        let owned = tap("");
        let owner = TapOwner {
            uid: 60001,
            alias: "made for 60001".to_owned(),
        };
        assert!(
            ops.netlink()
                .create_tap_for(&owned, &br, Some(&owner))
                .await
                .unwrap()
        );
        let line = link_line(&owned).unwrap();
        assert!(line.contains(" user 60001 "), "{line}");
        assert!(line.contains(&format!("master {br}")), "{line}");
        let status = ops.netlink().link(&owned).await.unwrap().unwrap();
        assert_eq!(status.tun_owner, Some(60001));
        assert_eq!(status.alias.as_deref(), Some("made for 60001"));

        // Without an owner: root's, as before, and no alias.
        let plain = tap("");
        ops.create_tap(&plain, &br).await.unwrap();
        let status = ops.netlink().link(&plain).await.unwrap().unwrap();
        assert_eq!(status.tun_owner, None);
        assert_eq!(status.alias, None);

        ops.netlink().set_alias(&br, "a bridge").await.unwrap();
        let status = ops.netlink().link(&br).await.unwrap().unwrap();
        assert_eq!(status.alias.as_deref(), Some("a bridge"));
        assert_eq!(status.tun_owner, None);

        assert!(ops.delete_tap(&owned).await.unwrap());
        assert!(ops.delete_tap(&plain).await.unwrap());
    });
}

#[test]
fn rename_keeps_the_tap_attached_and_up() {
    if !root_or_skip("rename_keeps_the_tap_attached_and_up") {
        return;
    }
    in_netns(|| async {
        let ops = RealNetOps::connect().unwrap();
        let br = bridge(&ops).await;
        let from = format!("btap-pool-{}", rand_index());
        let to = tap("");
        ops.create_tap(&from, &br).await.unwrap();

        ops.rename_tap(&from, &to).await.unwrap();
        assert_eq!(link_line(&from), None);
        let line = link_line(&to).expect("renamed TAP");
        assert!(line.contains(&format!("master {br}")), "{line}");
        assert!(line.contains(",UP"), "{line}");

        let err = ops.rename_tap(&from, &to).await.unwrap_err();
        assert!(matches!(err, RenameTapError::NotFound { .. }), "{err:?}");

        // Renaming onto an existing name fails and leaves the source usable.
        let other = tap("");
        ops.create_tap(&other, &br).await.unwrap();
        let err = ops.rename_tap(&other, &to).await.unwrap_err();
        assert!(matches!(err, RenameTapError::Netlink { .. }), "{err:?}");
        let line = link_line(&other).unwrap();
        assert!(line.contains(",UP"), "{line}");

        ops.delete_tap(&to).await.unwrap();
        ops.delete_tap(&other).await.unwrap();
        assert!(links_with_prefix("btap-").is_empty());
    });
}

fn rand_index() -> u32 {
    u32::from_str_radix(&random_hex(4), 16).unwrap()
}

#[test]
fn missing_bridge_and_foreign_names_are_refused() {
    if !root_or_skip("missing_bridge_and_foreign_names_are_refused") {
        return;
    }
    in_netns(|| async {
        let ops = RealNetOps::connect().unwrap();
        let name = tap("");
        let err = ops.create_tap(&name, "br-missing").await.unwrap_err();
        assert!(
            matches!(err, CreateTapError::BridgeMissing { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("br-missing"), "{err}");
        assert_eq!(link_line(&name), None, "no TAP left behind");

        let err = ops.delete_tap("lo").await.unwrap_err();
        assert!(matches!(err, DeleteTapError::InvalidName(_)), "{err:?}");
        assert!(link_line("lo").is_some());
        let br = bridge(&ops).await;
        let err = ops.create_tap("eth9", &br).await.unwrap_err();
        assert!(matches!(err, CreateTapError::InvalidName(_)), "{err:?}");
    });
}
