//! Operating-system specifics of the parent side, behind one interface.
//!
//! All `unsafe` of this crate lives below this module.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(not(unix))]
compile_error!("loky-rs supports Unix platforms for now; Windows support is planned");
