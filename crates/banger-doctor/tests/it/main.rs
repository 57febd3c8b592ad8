//! banger-doctor's checks against a faked host (every check pass/warn/fail)
//! and on this machine for real.

mod checks;
mod real;
