//! A logger for a test binary that keeps every record, so that tests can
//! check what the pool logged.

use std::sync::{Mutex, Once, PoisonError};

/// Every log record of this test binary: its level and message.
static RECORDS: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

/// The test binary's logger: keeps every record in [`RECORDS`].
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args().to_string();
        let mut records = RECORDS.lock().unwrap_or_else(PoisonError::into_inner);
        records.push((record.level(), message));
    }

    fn flush(&self) {}
}

/// Installs the capturing logger as the logger of this test binary (once).
pub fn capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&Capture).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// Forgets the records kept so far.
pub fn clear() {
    RECORDS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}

/// The records kept so far that `keep` selects.
pub fn records(keep: impl Fn(log::Level, &str) -> bool) -> Vec<(log::Level, String)> {
    let records = RECORDS.lock().unwrap_or_else(PoisonError::into_inner);
    records
        .iter()
        .filter(|(level, message)| keep(*level, message))
        .cloned()
        .collect()
}
