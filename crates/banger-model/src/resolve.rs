//! Resolving a user's reference: an exact name wins, then a full id, then a
//! unique id prefix.

use crate::Id;
use crate::id::looks_like_id_prefix;
use crate::image::Image;
use crate::kernel::Kernel;
use crate::vm::Vm;

/// A record users refer to by name or id.
pub trait Record {
    const KIND: &'static str;
    fn name(&self) -> &str;
    fn id(&self) -> &Id;
}

impl Record for Vm {
    const KIND: &'static str = "VM";
    fn name(&self) -> &str {
        self.name.as_str()
    }
    fn id(&self) -> &Id {
        &self.id
    }
}

impl Record for Image {
    const KIND: &'static str = "image";
    fn name(&self) -> &str {
        self.name.as_str()
    }
    fn id(&self) -> &Id {
        &self.id
    }
}

impl Record for Kernel {
    const KIND: &'static str = "kernel";
    fn name(&self) -> &str {
        self.name.as_str()
    }
    fn id(&self) -> &Id {
        &self.id
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no {kind} named or with id {reference:?}")]
    NotFound {
        kind: &'static str,
        reference: String,
    },
    #[error("{reference:?} matches several {kind}s by id prefix: {}; use more characters or the name", matches.join(", "))]
    Ambiguous {
        kind: &'static str,
        reference: String,
        matches: Vec<String>,
    },
}

pub fn resolve<'a, T: Record>(items: &'a [T], reference: &str) -> Result<&'a T, ResolveError> {
    if let Some(found) = items.iter().find(|item| item.name() == reference) {
        return Ok(found);
    }
    if let Some(found) = items.iter().find(|item| item.id().as_str() == reference) {
        return Ok(found);
    }
    let not_found = || ResolveError::NotFound {
        kind: T::KIND,
        reference: reference.to_owned(),
    };
    if !looks_like_id_prefix(reference) {
        return Err(not_found());
    }
    let prefix = reference.to_ascii_lowercase();
    let matches: Vec<&T> = items
        .iter()
        .filter(|item| item.id().as_str().starts_with(&prefix))
        .collect();
    match matches.as_slice() {
        [] => Err(not_found()),
        [one] => Ok(one),
        many => Err(ResolveError::Ambiguous {
            kind: T::KIND,
            reference: reference.to_owned(),
            matches: many
                .iter()
                .map(|item| format!("{} ({})", item.name(), item.id().short()))
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Item(String, Id);
    impl Record for Item {
        const KIND: &'static str = "thing";
        fn name(&self) -> &str {
            &self.0
        }
        fn id(&self) -> &Id {
            &self.1
        }
    }

    fn items() -> Vec<Item> {
        vec![
            Item("web".into(), Id::from_stored("abc111")),
            Item("db".into(), Id::from_stored("abc222")),
            Item("abc".into(), Id::from_stored("fff000")),
        ]
    }

    #[test]
    fn resolution_order() {
        let items = items();
        assert_eq!(resolve(&items, "web").unwrap().0, "web");
        assert_eq!(resolve(&items, "abc222").unwrap().0, "db");
        assert_eq!(resolve(&items, "abc2").unwrap().0, "db");
        // A name that is also an id prefix resolves to the name.
        assert_eq!(resolve(&items, "abc").unwrap().0, "abc");
        assert_eq!(resolve(&items, "ABC1").unwrap().0, "web");
    }

    #[test]
    fn missing_and_ambiguous() {
        let items = items();
        assert!(matches!(
            resolve(&items, "nope"),
            Err(ResolveError::NotFound { .. })
        ));
        assert!(matches!(
            resolve(&items, "999"),
            Err(ResolveError::NotFound { .. })
        ));
        let err = resolve(&items, "ab").unwrap_err();
        assert!(matches!(&err, ResolveError::Ambiguous { matches, .. } if matches.len() == 2));
        assert!(err.to_string().contains("web (abc111)"), "{err}");
    }
}
