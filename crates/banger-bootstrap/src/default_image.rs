//! Where the default image comes from, in words (for `doctor` and for the
//! first-use fallback of `vm run`/`vm create`).

use banger_model::image::{Image, ImageSource};

use crate::distro::{DEBIAN_MIRROR, DEFAULT};

/// The default image's origin, or what happens when there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultImageSource {
    /// An image is the default.
    Image { name: String, source: ImageSource },
    /// No default image: the first `vm run`/`vm create` without `--image`
    /// bootstraps this distribution from its packages.
    Bootstrap { distro: &'static str },
}

/// Reads the default from a list of images.
pub fn default_image_source(images: &[Image]) -> DefaultImageSource {
    match images.iter().find(|image| image.is_default) {
        Some(image) => DefaultImageSource::Image {
            name: image.name.to_string(),
            source: image.source.clone(),
        },
        None => DefaultImageSource::Bootstrap { distro: DEFAULT },
    }
}

/// One line for `doctor`: `debian-bookworm, bootstrapped from debian:bookworm
/// packages (http://deb.debian.org/debian)`.
pub fn describe(source: &DefaultImageSource) -> String {
    match source {
        DefaultImageSource::Bootstrap { distro } => format!(
            "no default image yet: the first `banger vm run` bootstraps {distro} (developer profile) from Debian's packages ({DEBIAN_MIRROR}, needs debootstrap)"
        ),
        DefaultImageSource::Image { name, source } => format!("{name}, {}", origin(source)),
    }
}

/// Where an image came from, in words: `developer profile, bootstrapped
/// from debian:bookworm packages (http://deb.debian.org/debian)`.
pub fn origin(source: &ImageSource) -> String {
    match source {
        ImageSource::Bootstrap {
            distro,
            mirror,
            profile,
            ..
        } => format!("{profile} profile, bootstrapped from {distro} packages ({mirror})"),
        ImageSource::Import { path } => format!("imported from {}", path.display()),
        ImageSource::Register => "registered from existing files".to_owned(),
        ImageSource::Pull { reference, .. } => format!("pulled from {reference}"),
        ImageSource::Catalog { name, .. } => format!("from the catalog ({name})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_model::{ByteSize, Id, Name};

    fn image(name: &str, source: ImageSource, is_default: bool) -> Image {
        Image {
            id: Id::generate(),
            name: Name::parse(name).unwrap(),
            kernel_id: None,
            kernel_name: None,
            rootfs_path: "/r".into(),
            work_seed_path: None,
            rootfs_size: ByteSize::gib(1),
            source,
            is_default,
            created_at: jiff::Timestamp::now(),
        }
    }

    #[test]
    fn describes_each_source() {
        assert!(describe(&default_image_source(&[])).contains("bootstraps debian:bookworm"));
        let images = [
            image("old", ImageSource::Register, false),
            image(
                "debian-bookworm",
                ImageSource::Bootstrap {
                    distro: "debian:bookworm".into(),
                    mirror: DEBIAN_MIRROR.into(),
                    profile: banger_model::image::ImageProfile::Developer,
                    extra_packages: Vec::new(),
                    installed_size: None,
                },
                true,
            ),
        ];
        assert_eq!(
            describe(&default_image_source(&images)),
            "debian-bookworm, developer profile, bootstrapped from debian:bookworm packages (http://deb.debian.org/debian)"
        );
    }
}
