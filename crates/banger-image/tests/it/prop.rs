//! Property test of tar → rootfs: random layers built from a small, nasty
//! alphabet (`..`, `.`, whiteouts, opaque markers, absolute names,
//! symlinks to `..` and to a real directory outside the staging root, hard
//! links to files outside, devices) are applied; whatever happens, nothing
//! outside the staging directory is created, changed or linked, and a
//! failed unpack leaves no staging directory.

use std::os::unix::fs::MetadataExt;

use banger_image::{UnpackOptions, Unpacker};
use proptest::prelude::*;
use tar::EntryType;

use crate::support::tarball::{Entry, Tarball, gzip};
use crate::support::{Sandbox, tree};

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
    Fifo,
    Char,
}

#[derive(Debug, Clone)]
struct GenEntry {
    path: String,
    kind: Kind,
    mode: u32,
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("a".to_owned()),
        4 => Just("b".to_owned()),
        3 => Just("sub".to_owned()),
        2 => Just("..".to_owned()),
        1 => Just(".".to_owned()),
        1 => Just("".to_owned()),
        2 => Just(".wh.a".to_owned()),
        1 => Just(".wh.sub".to_owned()),
        2 => Just(".wh..wh..opq".to_owned()),
        1 => Just(".wh..".to_owned()),
        1 => Just("@SENTINEL".to_owned()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    (
        prop_oneof![6 => Just(""), 1 => Just("/"), 1 => Just("./")],
        proptest::collection::vec(component(), 1..4),
    )
        .prop_map(|(prefix, parts)| format!("{prefix}{}", parts.join("/")))
}

fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => path(),
        2 => Just("@SENTINEL".to_owned()),
        2 => Just("@SENTINEL/canary".to_owned()),
        1 => Just("../../..".to_owned()),
        1 => Just("/".to_owned()),
        1 => Just("/etc/passwd".to_owned()),
    ]
}

fn entry() -> impl Strategy<Value = GenEntry> {
    let kind = prop_oneof![
        3 => Just(Kind::Dir),
        4 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Kind::File),
        3 => link_target().prop_map(Kind::Symlink),
        2 => link_target().prop_map(Kind::Hardlink),
        1 => Just(Kind::Fifo),
        1 => Just(Kind::Char),
    ];
    (
        path(),
        kind,
        prop_oneof![Just(0o755u32), Just(0o644), Just(0o4755), Just(0o000)],
    )
        .prop_map(|(path, kind, mode)| GenEntry { path, kind, mode })
}

fn build(entries: &[GenEntry], sentinel: &str) -> Vec<u8> {
    let expand = |text: &str| text.replace("@SENTINEL", sentinel);
    let mut tarball = Tarball::new();
    for entry in entries {
        let name = expand(&entry.path);
        let (kind, link, data): (EntryType, Option<String>, Vec<u8>) = match &entry.kind {
            Kind::Dir => (EntryType::Directory, None, Vec::new()),
            Kind::File(data) => (EntryType::Regular, None, data.clone()),
            Kind::Symlink(target) => (EntryType::Symlink, Some(expand(target)), Vec::new()),
            Kind::Hardlink(target) => (EntryType::Link, Some(expand(target)), Vec::new()),
            Kind::Fifo => (EntryType::Fifo, None, Vec::new()),
            Kind::Char => (EntryType::Char, None, Vec::new()),
        };
        tarball.entry(Entry {
            kind,
            name: name.as_bytes(),
            link: link.as_deref().map(str::as_bytes),
            data: &data,
            mode: entry.mode,
            device: matches!(entry.kind, Kind::Char).then_some((1, 3)),
            ..Entry::default()
        });
    }
    tarball.bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn nothing_lands_outside_staging(
        layers in proptest::collection::vec(proptest::collection::vec(entry(), 0..14), 1..4),
        compress in any::<bool>(),
    ) {
        let sandbox = Sandbox::new();
        let sentinel = sandbox.sentinel();
        let canary_inode = std::fs::metadata(sentinel.join("canary")).unwrap().ino();
        let passwd_links = std::fs::metadata("/etc/passwd").map(|meta| meta.nlink()).ok();
        let options = UnpackOptions::default();

        let result = (|| {
            let mut unpacker = Unpacker::create(&sandbox.staging(), options)?;
            for (index, entries) in layers.iter().enumerate() {
                let mut bytes = build(entries, sentinel.to_str().unwrap());
                if compress {
                    bytes = gzip(&bytes);
                }
                unpacker.apply_compressed(&format!("layer{index}"), &mut bytes.as_slice(), None)?;
            }
            unpacker.finish()
        })();

        sandbox.assert_untouched();
        prop_assert_eq!(std::fs::metadata(sentinel.join("canary")).unwrap().nlink(), 1);
        prop_assert_eq!(std::fs::metadata("/etc/passwd").map(|meta| meta.nlink()).ok(), passwd_links);
        match result {
            Ok(_) => {
                for path in tree(&sandbox.staging()) {
                    let meta = std::fs::symlink_metadata(sandbox.staging().join(&path)).unwrap();
                    prop_assert_ne!(meta.ino(), canary_inode, "{} is the canary", path);
                }
            }
            Err(err) => {
                prop_assert!(!sandbox.staging().exists(), "staging left after: {}", err);
                let message = err.to_string();
                prop_assert!(message.contains("layer"), "error does not name the layer: {}", message);
            }
        }
    }
}
