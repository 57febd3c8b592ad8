//! The agent is copied into guests of any distribution: it must not need a
//! dynamic loader or shared libraries from the guest.

use std::path::Path;

/// `PT_INTERP`: the program header naming the dynamic loader.
const PT_INTERP: u32 = 3;
/// `PT_DYNAMIC`: present in static-pie too (self-relocation), without DT_NEEDED.
const PT_DYNAMIC: u32 = 2;
const DT_NEEDED: u64 = 1;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[test]
fn agent_binary_is_statically_linked() {
    let path = Path::new(env!("CARGO_BIN_EXE_banger-vsock-agent"));
    let elf = fs_err::read(path).expect("read agent binary");
    assert_eq!(
        &elf[..4],
        b"\x7fELF",
        "{} is not an ELF file",
        path.display()
    );
    assert_eq!(elf[4], 2, "expected a 64-bit ELF");
    assert_eq!(elf[5], 1, "expected little endian");

    let phoff = usize::try_from(u64_at(&elf, 0x20)).expect("phoff fits");
    let phentsize = usize::from(u16_at(&elf, 0x36));
    let phnum = usize::from(u16_at(&elf, 0x38));
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = u32_at(&elf, ph);
        assert_ne!(
            p_type,
            PT_INTERP,
            "{} asks for a dynamic loader: it is not statically linked",
            path.display()
        );
        if p_type == PT_DYNAMIC {
            let offset = usize::try_from(u64_at(&elf, ph + 0x08)).expect("offset fits");
            let size = usize::try_from(u64_at(&elf, ph + 0x20)).expect("size fits");
            for entry in elf[offset..offset + size].chunks_exact(16) {
                assert_ne!(
                    u64_at(entry, 0),
                    DT_NEEDED,
                    "{} needs a shared library",
                    path.display()
                );
            }
        }
    }
}
