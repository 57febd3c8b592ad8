//! `vm workspace export`: a binary-safe patch of everything in the guest's
//! checkout since the base commit — work the guest committed and work it did
//! not — made with `git add -A` then `git diff --cached --binary BASE`, in a
//! copy of the guest's index, so exporting stages nothing there.

/// Whether `base` is a commit id we can pass to the guest (hex only).
pub fn valid_base(base: &str) -> bool {
    (4..=64).contains(&base.len()) && base.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The remote command producing the patch on stdout. The index it stages
/// into is a copy (its stat data kept, so unchanged files are not read
/// again), removed afterwards; without an index, git starts one.
pub fn remote_command(base: &str) -> String {
    debug_assert!(valid_base(base));
    format!(
        "cd /root/repo && d=$(mktemp -d) && trap 'rm -rf \"$d\"' EXIT \
         && {{ ! [ -e .git/index ] || cp .git/index \"$d/index\"; }} \
         && export GIT_INDEX_FILE=\"$d/index\" \
         && git add -A && git diff --cached --binary --full-index {base}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commit_ids_reach_the_remote_command() {
        assert!(valid_base("0123abcd"));
        assert!(!valid_base("HEAD; rm -rf /"));
        assert!(!valid_base("abc"));
        assert!(remote_command("abcd1234").ends_with("--full-index abcd1234"));
    }
}
