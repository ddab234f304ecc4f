//! Captures the service's log lines in memory, so tests can read what an
//! operator would see. One logger for the whole test binary; tests find their
//! own lines by a unique request id.

use std::sync::{Mutex, Once};

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info && metadata.target().starts_with("plan_queue")
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            LINES.lock().unwrap().push(format!("{}", record.args()));
        }
    }

    fn flush(&self) {}
}

/// Starts capturing (once per test binary).
pub fn capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_boxed_logger(Box::new(Capture)).expect("no other logger in the tests");
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// Captured lines containing `needle`.
pub fn lines_with(needle: &str) -> Vec<String> {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains(needle))
        .cloned()
        .collect()
}
