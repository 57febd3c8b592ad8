//! Integration tests of banger-guest: the first-boot script run for real by
//! `sh`, the directory installer, and the test-image fixture scripts.

mod first_boot;
mod fixtures;
mod install;
mod util;
