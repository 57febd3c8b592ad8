//! The marker-fenced `Include` of banger's ssh_config in `~/.ssh/config`,
//! as pure byte edits (the command does the file I/O).
//!
//! The block sits at the very top of the file:
//!
//! ```text
//! # >>> banger ssh-config >>>
//! # Added by `banger ssh-config --install`; `banger ssh-config --uninstall` removes it.
//! Include /home/me/.config/banger/ssh_config
//! # <<< banger ssh-config <<<
//! ```
//!
//! ssh_config(5) makes an `Include` inside a `Host` or `Match` block
//! conditional on that block, so appending to a file that ends inside
//! `Host foo` would only apply banger's settings to `foo`. Before the first
//! `Host`/`Match` line an `Include` is global, and the included file's own
//! `Host *.vm` does not leak into the lines that follow it (ssh restores the
//! including file's state after an include).
//!
//! Every byte outside banger's blocks is kept: line endings (the block uses
//! the file's, LF or CRLF), a missing final newline, comments, order.
//! Installing removes any banger block first (a current one anywhere in the
//! file, or the legacy inline `Host *.vm` block that older banger wrote
//! between `# BEGIN BANGER MANAGED BLOCK` and `# END BANGER MANAGED BLOCK`),
//! so install is idempotent and migrates; uninstall removes both kinds.

use std::path::Path;

pub const BEGIN: &str = "# >>> banger ssh-config >>>";
pub const END: &str = "# <<< banger ssh-config <<<";
pub const LEGACY_BEGIN: &str = "# BEGIN BANGER MANAGED BLOCK";
pub const LEGACY_END: &str = "# END BANGER MANAGED BLOCK";
const NOTE: &str =
    "# Added by `banger ssh-config --install`; `banger ssh-config --uninstall` removes it.";

/// A begin marker without its end marker: banger refuses to guess where its
/// block ends rather than delete a user's lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: `{marker}` has no matching `{end}`; fix or remove it by hand")]
pub struct UnterminatedBlock {
    pub line: usize,
    pub marker: &'static str,
    pub end: &'static str,
}

/// What `~/.ssh/config` holds of banger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// banger's block comes before any `Host`/`Match` line.
    Installed,
    /// banger's block is inside a `Host`/`Match` block (moved by hand), so
    /// it only applies to that block.
    Misplaced,
    /// Only the legacy inline block.
    Legacy,
    Missing,
}

/// The `Include` line for banger's ssh_config (quoted when the path has
/// whitespace).
pub fn include_line(ssh_config: &Path) -> String {
    let path = ssh_config.display().to_string();
    if path.contains(char::is_whitespace) {
        format!("Include \"{path}\"")
    } else {
        format!("Include {path}")
    }
}

/// banger's block, with `eol` line endings.
pub fn block(ssh_config: &Path, eol: &str) -> String {
    [BEGIN, NOTE, &include_line(ssh_config), END]
        .iter()
        .map(|line| format!("{line}{eol}"))
        .collect()
}

/// Lines with their terminators.
fn lines(text: &[u8]) -> Vec<&[u8]> {
    text.split_inclusive(|byte| *byte == b'\n').collect()
}

/// A line without its terminator and surrounding whitespace, if it is UTF-8.
fn content(line: &[u8]) -> &str {
    std::str::from_utf8(line).map_or("", str::trim)
}

/// `CRLF` when the file's first line ends so, else `LF`.
fn line_ending(text: &[u8]) -> &'static str {
    match lines(text).first() {
        Some(line) if line.ends_with(b"\r\n") => "\r\n",
        _ => "\n",
    }
}

/// Whether a line opens a `Host` or `Match` block (keyword case-insensitive,
/// separated by whitespace or `=`).
fn opens_block(line: &str) -> bool {
    let keyword = line
        .split(|c: char| c.is_whitespace() || c == '=')
        .next()
        .unwrap_or("");
    keyword.eq_ignore_ascii_case("host") || keyword.eq_ignore_ascii_case("match")
}

/// Removes banger's blocks; returns the remaining bytes and how many
/// current and legacy blocks were removed.
pub fn remove_blocks(text: &[u8]) -> Result<(Vec<u8>, usize, usize), UnterminatedBlock> {
    let lines = lines(text);
    let mut kept = Vec::with_capacity(text.len());
    let (mut current, mut legacy) = (0, 0);
    let mut index = 0;
    while index < lines.len() {
        let line = content(lines[index]);
        let end = if line == BEGIN {
            Some((BEGIN, END))
        } else if line.eq_ignore_ascii_case(LEGACY_BEGIN) {
            Some((LEGACY_BEGIN, LEGACY_END))
        } else {
            None
        };
        let Some((begin, end)) = end else {
            kept.extend_from_slice(lines[index]);
            index += 1;
            continue;
        };
        let close = lines[index + 1..]
            .iter()
            .position(|line| content(line).eq_ignore_ascii_case(end))
            .ok_or(UnterminatedBlock {
                line: index + 1,
                marker: begin,
                end,
            })?;
        if begin == BEGIN {
            current += 1;
        } else {
            legacy += 1;
        }
        index += close + 2;
    }
    Ok((kept, current, legacy))
}

/// The file with banger's block at the top and no other banger block.
pub fn install(text: &[u8], ssh_config: &Path) -> Result<Vec<u8>, UnterminatedBlock> {
    let (rest, _, _) = remove_blocks(text)?;
    let mut out = block(ssh_config, line_ending(text)).into_bytes();
    out.extend_from_slice(&rest);
    Ok(out)
}

/// The file without banger's blocks.
pub fn uninstall(text: &[u8]) -> Result<Vec<u8>, UnterminatedBlock> {
    remove_blocks(text).map(|(rest, _, _)| rest)
}

pub fn state(text: &[u8]) -> State {
    let mut in_block = false;
    let mut legacy = false;
    for line in lines(text) {
        let line = content(line);
        if line == BEGIN {
            return if in_block {
                State::Misplaced
            } else {
                State::Installed
            };
        }
        if line.eq_ignore_ascii_case(LEGACY_BEGIN) {
            legacy = true;
        }
        if opens_block(line) {
            in_block = true;
        }
    }
    if legacy {
        State::Legacy
    } else {
        State::Missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "/home/me/.config/banger/ssh_config";

    fn installed(text: &str) -> String {
        String::from_utf8(install(text.as_bytes(), Path::new(CONFIG)).unwrap()).unwrap()
    }

    #[test]
    fn install_puts_the_block_first_and_keeps_every_byte() {
        let user = "Host work\n  User me\n  # trailing comment";
        let out = installed(user);
        assert_eq!(out, format!("{}{user}", block(Path::new(CONFIG), "\n")));
        assert_eq!(uninstall(out.as_bytes()).unwrap(), user.as_bytes());
        assert_eq!(state(out.as_bytes()), State::Installed);
        assert_eq!(state(user.as_bytes()), State::Missing);
    }

    #[test]
    fn install_is_idempotent() {
        let once = installed("Host a\n  User b\n");
        assert_eq!(installed(&once), once);
    }

    #[test]
    fn crlf_files_get_a_crlf_block() {
        let user = "Host a\r\n  User b\r\n";
        let out = installed(user);
        assert!(out.starts_with(&format!("{BEGIN}\r\n")), "{out:?}");
        assert!(!out.replace("\r\n", "").contains('\n'), "{out:?}");
        assert_eq!(uninstall(out.as_bytes()).unwrap(), user.as_bytes());
    }

    #[test]
    fn a_block_moved_into_a_host_section_is_misplaced_and_moved_back() {
        let moved = format!("Host a\n  User b\n{}", block(Path::new(CONFIG), "\n"));
        assert_eq!(state(moved.as_bytes()), State::Misplaced);
        let fixed = installed(&moved);
        assert_eq!(state(fixed.as_bytes()), State::Installed);
        assert!(fixed.ends_with("Host a\n  User b\n"), "{fixed:?}");
        assert!(opens_block("Match host x") && opens_block("host=x") && !opens_block("Hostname x"));
    }

    #[test]
    fn legacy_block_is_migrated() {
        let user = format!(
            "Host a\n  User b\n{LEGACY_BEGIN}\nHost *.vm\n  User root\n{LEGACY_END}\nHost c\n"
        );
        assert_eq!(state(user.as_bytes()), State::Legacy);
        let out = installed(&user);
        assert_eq!(
            out,
            format!(
                "{}Host a\n  User b\nHost c\n",
                block(Path::new(CONFIG), "\n")
            )
        );
        assert_eq!(
            uninstall(user.as_bytes()).unwrap(),
            b"Host a\n  User b\nHost c\n"
        );
    }

    #[test]
    fn an_unterminated_block_is_refused() {
        let user = format!("Host a\n{BEGIN}\nInclude x\n");
        let err = install(user.as_bytes(), Path::new(CONFIG)).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(uninstall(user.as_bytes()).is_err());
    }

    #[test]
    fn paths_with_spaces_are_quoted() {
        assert_eq!(
            include_line(Path::new("/home/m e/.config/banger/ssh_config")),
            "Include \"/home/m e/.config/banger/ssh_config\""
        );
    }
}
