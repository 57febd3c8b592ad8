//! `banger vm logs|stats|health`

use banger_rpc::method;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use banger_model::layout::Layout;
use banger_rpc::request::RefParams;
use banger_rpc::response::{VmHealth, VmStats};

use crate::args::{RefJsonArgs, VmLogsArgs};
use crate::daemon_client;
use crate::output::print_json;

pub(super) async fn logs(layout: &Layout, args: &VmLogsArgs) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let vm = client
        .call::<method::VmShow>(RefParams::new(&args.reference), |_| {})
        .await?
        .vm;
    drop(client);
    let paths = vm.paths();
    let files = [
        ("console", paths.console_log()),
        ("vmm log", paths.vmm_log()),
    ];
    let mut offsets = [0u64; 2];
    let mut out = Labelled::default();
    let stdout = std::io::stdout();
    for (index, (label, path)) in files.iter().enumerate() {
        let (bytes, offset) = read_from(path, 0)?;
        offsets[index] = offset;
        out.write(&mut stdout.lock(), label, path, &bytes, true)?;
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        for (index, (label, path)) in files.iter().enumerate() {
            let (bytes, offset) = read_from(path, offsets[index])?;
            offsets[index] = offset;
            out.write(&mut stdout.lock(), label, path, &bytes, false)?;
        }
    }
}

/// Output of several logs on one stream, `tail -f` style: a `==> label:
/// path <==` header whenever the log being shown changes, on a line of its
/// own, so each line is under the header of the log it came from.
#[derive(Debug, Default)]
struct Labelled {
    /// The label of the log written last.
    current: Option<String>,
    /// Whether the last byte written ended a line.
    mid_line: bool,
}

impl Labelled {
    /// Writes `bytes` of log `label`; `always` prints its header even with
    /// nothing new (the first dump of every log).
    fn write(
        &mut self,
        out: &mut impl Write,
        label: &str,
        path: &Path,
        bytes: &[u8],
        always: bool,
    ) -> std::io::Result<()> {
        if bytes.is_empty() && !always {
            return Ok(());
        }
        if self.current.as_deref() != Some(label) || always {
            if self.mid_line {
                out.write_all(b"\n")?;
            }
            writeln!(out, "==> {label}: {} <==", path.display())?;
            self.current = Some(label.to_owned());
            self.mid_line = false;
        }
        if !bytes.is_empty() {
            out.write_all(bytes)?;
            self.mid_line = !bytes.ends_with(b"\n");
        }
        out.flush()
    }
}

/// What `path` holds from `offset` on, and the new offset. A missing file
/// is empty; a truncated one starts over.
fn read_from(path: &Path, offset: u64) -> anyhow::Result<(Vec<u8>, u64)> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(err) => return Err(anyhow::anyhow!("reading {}: {err}", path.display())),
    };
    let len = file.metadata()?.len();
    let start = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let end = start + bytes.len() as u64;
    Ok((bytes, end))
}

pub(super) async fn stats(layout: &Layout, args: &RefJsonArgs) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let stats: VmStats = client
        .call::<method::VmStats>(RefParams::new(&args.reference), |_| {})
        .await?;
    if args.json {
        print_json(&stats)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("vm          {}", stats.name);
    println!("vmm pid     {}", stats.pid);
    println!("cpu         {:.1}%", stats.cpu_percent);
    println!(
        "memory      {} (rss)",
        banger_model::ByteSize(stats.rss_bytes).human()
    );
    println!("threads     {}", stats.threads);
    println!("uptime      {}s", stats.uptime_seconds);
    println!("disks       {}", super::vm_list::disks_line(&stats.disks));
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn health(layout: &Layout, args: &RefJsonArgs) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let health: VmHealth = client
        .call::<method::VmHealth>(RefParams::new(&args.reference), |_| {})
        .await?;
    if args.json {
        print_json(&health)?;
    } else if health.agent_ok {
        println!(
            "{}: healthy (agent {})",
            health.name,
            health.agent_version.as_deref().unwrap_or("?")
        );
    } else {
        println!(
            "{}: unhealthy: {}",
            health.name,
            health.agent_error.as_deref().unwrap_or("no answer")
        );
    }
    Ok(if health.agent_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_under_the_header_of_its_log() {
        let (console, vmm) = (Path::new("/v/console.log"), Path::new("/v/vmm.log"));
        let mut out = Vec::new();
        let mut labelled = Labelled::default();
        labelled
            .write(&mut out, "console", console, b"boot 1\n", true)
            .unwrap();
        labelled.write(&mut out, "vmm log", vmm, b"", true).unwrap();
        // Following: new console output after the vmm header gets its own.
        labelled
            .write(&mut out, "console", console, b"login: ", false)
            .unwrap();
        labelled
            .write(&mut out, "vmm log", vmm, b"", false)
            .unwrap();
        labelled
            .write(&mut out, "vmm log", vmm, b"api: PUT\n", false)
            .unwrap();
        labelled
            .write(&mut out, "vmm log", vmm, b"api: GET\n", false)
            .unwrap();
        labelled
            .write(&mut out, "console", console, b"root\n", false)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "==> console: /v/console.log <==\nboot 1\n\
             ==> vmm log: /v/vmm.log <==\n\
             ==> console: /v/console.log <==\nlogin: \n\
             ==> vmm log: /v/vmm.log <==\napi: PUT\napi: GET\n\
             ==> console: /v/console.log <==\nroot\n"
        );
    }
}
