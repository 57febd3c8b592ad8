//! Quoting for a POSIX shell, for the places banger hands a command line
//! to one (ssh's remote shell) or shows one for the user to copy.

/// `word` as one POSIX shell word: unchanged when it holds only characters
/// no shell treats specially, else in single quotes (a `'` inside becomes
/// `'\''`).
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(
            quote("/home/me/.local/state/banger"),
            "/home/me/.local/state/banger"
        );
        assert_eq!(quote("my state"), "'my state'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a$b"), "'a$b'");
    }
}
