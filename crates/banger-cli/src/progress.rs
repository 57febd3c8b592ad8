//! Renders the daemon's progress events on stderr: spinners and bars on a
//! terminal, one plain line per finished stage otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use banger_rpc::{Event, StageStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug)]
pub struct Progress {
    multi: Option<MultiProgress>,
    /// The terminal's settings before `ECHOCTL` was turned off (restored by
    /// [`Progress::finish`] and on drop).
    echo: Option<QuietCtrlC>,
    stages: HashMap<String, ProgressBar>,
    tasks: HashMap<String, ProgressBar>,
    /// Non-terminal output: last printed tenth per task, to keep logs short.
    printed_tenths: HashMap<String, u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    pub fn new() -> Self {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let echo = multi.as_ref().and_then(|_| QuietCtrlC::start());
        Self {
            multi,
            echo,
            stages: HashMap::new(),
            tasks: HashMap::new(),
            printed_tenths: HashMap::new(),
        }
    }

    /// Prints a line without tearing a live spinner.
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    pub fn on_event(&mut self, event: Event) {
        match event {
            Event::Stage {
                stage,
                status,
                elapsed_ms,
                detail,
            } => {
                self.on_stage(stage, status, elapsed_ms, detail);
            }
            Event::Progress {
                task,
                current,
                total,
                unit,
                detail,
            } => self.on_progress(task, current, total, &unit, detail),
            Event::Log { level, message } => self.println(&format!("{level}: {message}")),
            // The command that asked for a VM prints its spec its own way.
            Event::Spec { .. } => {}
        }
    }

    fn on_stage(
        &mut self,
        stage: String,
        status: StageStatus,
        elapsed_ms: Option<u64>,
        detail: Option<String>,
    ) {
        let elapsed = elapsed_ms.map(format_ms).unwrap_or_default();
        let suffix = detail
            .map(|detail| format!(" ({detail})"))
            .unwrap_or_default();
        let (mark, word) = match status {
            StageStatus::Started => ("…", "started"),
            StageStatus::Done => ("✓", "done"),
            StageStatus::Failed => ("✗", "failed"),
            StageStatus::Skipped => ("-", "skipped"),
        };
        let Some(multi) = &self.multi else {
            if status != StageStatus::Started {
                eprintln!("{stage:<18} {word:<8} {elapsed}{suffix}");
            }
            return;
        };
        if status == StageStatus::Started {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
            );
            bar.set_message(stage.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            self.stages.insert(stage, bar);
            return;
        }
        let bar = self
            .stages
            .remove(&stage)
            .unwrap_or_else(|| multi.add(ProgressBar::new_spinner()));
        bar.set_style(ProgressStyle::with_template("{msg}").expect("valid template"));
        bar.finish_with_message(format!("{mark} {stage:<18} {elapsed}{suffix}"));
    }

    fn on_progress(
        &mut self,
        task: String,
        current: u64,
        total: Option<u64>,
        unit: &str,
        detail: Option<String>,
    ) {
        let Some(multi) = &self.multi else {
            if let Some(total) = total.filter(|total| *total > 0) {
                let tenth = current * 10 / total;
                let last = self.printed_tenths.entry(task.clone()).or_insert(u64::MAX);
                if *last != tenth {
                    *last = tenth;
                    let detail = detail
                        .map(|detail| format!(" ({detail})"))
                        .unwrap_or_default();
                    eprintln!("{task}: {}%{detail}", tenth * 10);
                }
            }
            return;
        };
        let bar = self.tasks.entry(task.clone()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(total.unwrap_or(0)));
            let template = if unit == "bytes" {
                "{prefix:20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta} {msg}"
            } else {
                "{prefix:20} [{bar:30}] {pos}/{len} {msg}"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(task.clone());
            bar
        });
        if let Some(total) = total {
            bar.set_length(total);
        }
        if let Some(detail) = detail {
            bar.set_message(detail);
        }
        bar.set_position(current);
        if total.is_some_and(|total| current >= total) {
            bar.finish();
        }
    }

    /// Clears spinners that never finished (e.g. the request failed).
    pub fn finish(&mut self) {
        for (_, bar) in self.stages.drain() {
            bar.abandon();
        }
        for (_, bar) in self.tasks.drain() {
            bar.abandon();
        }
        self.echo = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.echo = None;
    }
}

/// The terminal does not echo `^C` while progress is drawn: indicatif pads
/// the last line to the terminal's width, so the two echoed characters
/// would wrap the cursor onto a new line, and every redraw after a Ctrl-C
/// would land one line lower than the last, leaving copies of the spinners
/// behind. Turns `ECHOCTL` off on stderr's terminal and back on when dropped.
#[derive(Debug)]
struct QuietCtrlC {
    saved: nix::sys::termios::Termios,
}

impl QuietCtrlC {
    fn start() -> Option<Self> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stderr = std::io::stderr();
        let saved = tcgetattr(&stderr).ok()?;
        if !saved.local_flags.contains(LocalFlags::ECHOCTL) {
            return None;
        }
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHOCTL);
        tcsetattr(&stderr, SetArg::TCSANOW, &quiet).ok()?;
        Some(Self { saved })
    }
}

impl Drop for QuietCtrlC {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stderr(), SetArg::TCSANOW, &self.saved);
    }
}

fn format_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(format_ms(38), "38 ms");
        assert_eq!(format_ms(1234), "1.2 s");
    }
}
