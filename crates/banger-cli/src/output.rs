//! Rendering: tables, JSON, relative times, and errors with hints.
//! stdout carries data only; messages and progress go to stderr.

use std::io::IsTerminal;
use std::process::ExitCode;

use banger_rpc::{CallError, ErrorCode, RpcError};
use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

/// Exit code for usage errors.
pub const EXIT_USAGE: u8 = 2;

/// A failure that carries its own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitError {
    pub message: String,
    pub code: u8,
}

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A borderless table sized to the terminal.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(header.iter().copied());
    table
}

pub fn print_table(table: &mut Table) {
    for column in table.column_iter_mut() {
        column.set_padding((0, 3));
    }
    for line in table.to_string().lines() {
        println!("{}", line.trim_end());
    }
}

/// `3s ago`, `5m ago`, `2h ago`, `4d ago`.
pub fn ago(then: jiff::Timestamp) -> String {
    let seconds = (jiff::Timestamp::now().as_second() - then.as_second()).max(0);
    match seconds {
        0..=59 => format!("{seconds}s ago"),
        60..=3599 => format!("{}m ago", seconds / 60),
        3600..=86_399 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86_400),
    }
}

/// Whether to use colour on stderr.
pub fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
        && std::io::stderr().is_terminal()
}

/// Prints an error (and its hint) to stderr and picks the exit code.
pub fn report_error(err: &anyhow::Error) -> ExitCode {
    if let Some(exit) = err.downcast_ref::<ExitError>() {
        eprintln!("error: {}", exit.message);
        return ExitCode::from(exit.code);
    }
    let rpc = err.downcast_ref::<CallError>().and_then(|call| match call {
        CallError::Rpc(rpc) => Some(rpc),
        _ => None,
    });
    let rpc = rpc.or_else(|| err.downcast_ref::<RpcError>());
    match rpc {
        Some(rpc) => {
            eprintln!("error: {}", rpc.message);
            if let Some(hint) = &rpc.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(if rpc.code == ErrorCode::NotImplemented {
                EXIT_USAGE
            } else {
                1
            })
        }
        None => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
