//! Image references: `[registry/]repository[:tag][@sha256:digest]`.
//!
//! Normalised the way `docker pull` does it: no registry means Docker Hub
//! (`docker.io`), a one-component Docker Hub repository lives under
//! `library/`, and no tag or digest means `:latest`. The first component is
//! a registry when it contains a `.` or a `:` or is `localhost`.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry name Docker Hub references use.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually answers.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseReferenceError {
    #[error("image reference is empty")]
    Empty,
    #[error("image reference {reference:?}: invalid registry {registry:?}")]
    Registry { reference: String, registry: String },
    #[error(
        "image reference {reference:?}: invalid repository {repository:?} (lowercase letters, digits and . _ - separators, components joined by /)"
    )]
    Repository {
        reference: String,
        repository: String,
    },
    #[error("image reference {reference:?}: invalid tag {tag:?}")]
    Tag { reference: String, tag: String },
    #[error("image reference {reference:?}: invalid digest")]
    Digest {
        reference: String,
        #[source]
        source: crate::digest::ParseDigestError,
    },
}

impl Reference {
    /// The registry as the user names it (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) the registry API is reached at.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to put after `/manifests/`: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The same repository pinned to `digest` (tag kept for display).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ParseReferenceError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let reference = raw.trim();
        if reference.is_empty() {
            return Err(ParseReferenceError::Empty);
        }
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => {
                let digest =
                    digest
                        .parse::<Digest>()
                        .map_err(|source| ParseReferenceError::Digest {
                            reference: raw.to_owned(),
                            source,
                        })?;
                (name, Some(digest))
            }
            None => (reference, None),
        };
        let (registry, rest) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') =>
            {
                (first.to_ascii_lowercase(), rest)
            }
            _ => (DOCKER_HUB.to_owned(), name),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
            _ => registry,
        };
        if !valid_registry(&registry) {
            return Err(ParseReferenceError::Registry {
                reference: raw.to_owned(),
                registry,
            });
        }
        // The tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |at| at + 1);
        let (repository, tag) = match rest[last_slash..].rfind(':') {
            Some(at) => (
                &rest[..last_slash + at],
                Some(rest[last_slash + at + 1..].to_owned()),
            ),
            None => (rest, None),
        };
        let mut repository = repository.to_owned();
        if registry == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if !valid_repository(&repository) {
            return Err(ParseReferenceError::Repository {
                reference: raw.to_owned(),
                repository,
            });
        }
        if let Some(tag) = &tag
            && !valid_tag(tag)
        {
            return Err(ParseReferenceError::Tag {
                reference: raw.to_owned(),
                tag: tag.clone(),
            });
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            _ => tag,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

fn valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        // [ipv6]:port
        let Some((host, after)) = rest.split_once(']') else {
            return false;
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after.strip_prefix(':') {
            Some(port) => ("v6", Some(port)),
            None if after.is_empty() => ("v6", None),
            None => return false,
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        });
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok_and(|port| port > 0));
    host_ok && port_ok
}

fn valid_repository(repository: &str) -> bool {
    !repository.is_empty()
        && repository.len() <= 255
        && repository.split('/').all(|component| {
            let bytes = component.as_bytes();
            !bytes.is_empty()
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes.iter().all(|byte| {
                    byte.is_ascii_lowercase()
                        || byte.is_ascii_digit()
                        || matches!(byte, b'.' | b'_' | b'-')
                })
                && !component.contains("..")
        })
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Reference {
        raw.parse().unwrap_or_else(|err| panic!("{raw}: {err}"))
    }

    #[test]
    fn docker_hub_forms() {
        for raw in [
            "debian:bookworm",
            "library/debian:bookworm",
            "docker.io/library/debian:bookworm",
            "docker.io/debian:bookworm",
            "index.docker.io/library/debian:bookworm",
        ] {
            let reference = parse(raw);
            assert_eq!(reference.registry(), "docker.io", "{raw}");
            assert_eq!(reference.api_host(), "registry-1.docker.io");
            assert_eq!(reference.repository(), "library/debian");
            assert_eq!(reference.tag(), Some("bookworm"));
            assert_eq!(reference.to_string(), "docker.io/library/debian:bookworm");
        }
        let reference = parse("ubuntu");
        assert_eq!(reference.tag(), Some("latest"));
        assert_eq!(reference.manifest_ref(), "latest");
        assert_eq!(parse("someuser/app:1.0").repository(), "someuser/app");
    }

    #[test]
    fn local_registries_and_digests() {
        let reference = parse("127.0.0.1:5000/test/img:tag");
        assert_eq!(reference.registry(), "127.0.0.1:5000");
        assert_eq!(reference.api_host(), "127.0.0.1:5000");
        assert_eq!(reference.repository(), "test/img");
        assert_eq!(reference.tag(), Some("tag"));

        let reference = parse("localhost/img");
        assert_eq!(reference.registry(), "localhost");
        assert_eq!(reference.repository(), "img");

        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let reference = parse(&format!("debian@sha256:{hex}"));
        assert_eq!(reference.tag(), None);
        assert_eq!(reference.manifest_ref(), format!("sha256:{hex}"));
        let reference = parse(&format!("[::1]:5000/a/b:t@sha256:{hex}"));
        assert_eq!(reference.registry(), "[::1]:5000");
        assert_eq!(reference.tag(), Some("t"));
        assert_eq!(reference.manifest_ref(), format!("sha256:{hex}"));
        assert_eq!(
            reference.to_string(),
            format!("[::1]:5000/a/b:t@sha256:{hex}")
        );
        assert_eq!(parse("ghcr.io/org/sub/img:v1").repository(), "org/sub/img");
    }

    #[test]
    fn refuses_bad_references() {
        for raw in [
            "",
            "Debian",
            "debian:",
            "debian:-x",
            "a//b",
            "127.0.0.1:99999/x",
            "../x",
            "x/../y",
            "debian@sha256:abc",
            "debian@md5:abc",
            "bad host!/x",
        ] {
            assert!(raw.parse::<Reference>().is_err(), "{raw:?} parsed");
        }
    }
}
