//! [`RealHost`]: the checks' questions asked of this machine.

use std::net::{IpAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::host::{DeviceProbe, ForeignFiles, Host, KvmProbe, Privileges, Space};

/// The machine this process runs on.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealHost;

impl Host for RealHost {
    fn arch(&self) -> String {
        nix::sys::utsname::uname()
            .map(|name| name.machine().to_string_lossy().into_owned())
            .unwrap_or_else(|_| std::env::consts::ARCH.to_owned())
    }

    fn kvm(&self) -> KvmProbe {
        crate::kvm::probe(Path::new("/dev/kvm"))
    }

    fn device(&self, path: &Path) -> DeviceProbe {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(_) => DeviceProbe::Usable,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => DeviceProbe::Missing,
            Err(err) => DeviceProbe::Unusable(err.to_string()),
        }
    }

    fn find_program(&self, name: &str) -> Option<PathBuf> {
        banger_exec::find_program(name, banger_exec::SBIN)
    }

    fn is_executable(&self, path: &Path) -> bool {
        std::fs::metadata(path)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    }

    fn program_version(&self, program: &Path) -> Result<String, String> {
        crate::exec::program_version(program, Duration::from_secs(10))
    }

    fn privileges(&self) -> Privileges {
        Privileges {
            euid: nix::unistd::geteuid().as_raw(),
        }
    }

    fn free_space(&self, dir: &Path) -> Result<Space, String> {
        let existing = dir
            .ancestors()
            .find(|candidate| candidate.exists())
            .ok_or_else(|| format!("no part of {} exists", dir.display()))?;
        let stat = nix::sys::statvfs::statvfs(existing)
            .map_err(|errno| format!("statvfs {}: {}", existing.display(), errno.desc()))?;
        let fragment = stat.fragment_size() as u64;
        Ok(Space {
            available: stat.blocks_available() as u64 * fragment,
            total: stat.blocks() as u64 * fragment,
        })
    }

    fn resolve(&self, name: &str, timeout: Duration) -> Result<Vec<IpAddr>, String> {
        let (send, receive) = mpsc::channel();
        let query = format!("{name}:0");
        // getaddrinfo cannot be cancelled: a lookup that outlives the
        // timeout finishes in its own thread and its answer is dropped.
        std::thread::Builder::new()
            .name("doctor-resolve".into())
            .spawn(move || {
                let answer = query
                    .to_socket_addrs()
                    .map(|addrs| addrs.map(|addr| addr.ip()).collect::<Vec<_>>())
                    .map_err(|err| err.to_string());
                let _ = send.send(answer);
            })
            .map_err(|err| format!("cannot start a resolver thread: {err}"))?;
        match receive.recv_timeout(timeout) {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "the system resolver did not answer within {}s",
                timeout.as_secs()
            )),
        }
    }

    fn file_exists(&self, path: &Path) -> bool {
        path.is_file()
    }

    fn foreign_owned(&self, dirs: &[PathBuf], uid: u32) -> ForeignFiles {
        crate::ownership::foreign_owned(dirs, uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_and_space() {
        let host = RealHost;
        assert!(host.find_program("sh").is_some());
        assert!(host.find_program("banger-no-such-program").is_none());
        let space = host
            .free_space(Path::new("/tmp/banger/does/not/exist"))
            .unwrap();
        assert!(space.total >= space.available && space.total > 0);
    }

    #[test]
    fn resolves_localhost() {
        let addrs = RealHost
            .resolve("localhost", Duration::from_secs(10))
            .unwrap();
        assert!(addrs.iter().any(IpAddr::is_loopback), "{addrs:?}");
    }
}
