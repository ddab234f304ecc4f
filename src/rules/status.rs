//! The status of a scenario–environment pair (contract, section 6), defined
//! once: every status name Rust reads or writes comes from [`PairStatus`]. The
//! SQL side spells them in the `CHECK` constraint `execution_pairs_status_check`
//! (migration 6) and the literals of the server functions; a test
//! (`tests/api/functions.rs`) reads the constraint back and fails when it
//! and this enum disagree.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A pair's status: `QUEUED` when written, `RUNNING` once a runner said it
/// started, then one terminal status. Serialised as its name (`"PASSED"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PairStatus {
    /// Written, not yet started.
    Queued,
    /// A runner said it started.
    Running,
    /// Passed (terminal).
    Passed,
    /// Failed (terminal).
    Failed,
    /// Could not run properly (terminal).
    Error,
    /// The runner skipped it (terminal).
    Skipped,
    /// Stopped before its end (terminal).
    Aborted,
}

impl PairStatus {
    /// Every status, in the contract's order (the order of `counts`).
    pub const ALL: [PairStatus; 7] = [
        PairStatus::Queued,
        PairStatus::Running,
        PairStatus::Passed,
        PairStatus::Failed,
        PairStatus::Error,
        PairStatus::Skipped,
        PairStatus::Aborted,
    ];

    /// The terminal statuses, in the contract's order (the event's `counts`).
    pub const TERMINAL: [PairStatus; 5] = [
        PairStatus::Passed,
        PairStatus::Failed,
        PairStatus::Error,
        PairStatus::Skipped,
        PairStatus::Aborted,
    ];

    /// The statuses of an attempt that, followed by a `PASSED` one, make its
    /// pair flaky (contract, section 6).
    pub const FLAKY_FAILURES: [PairStatus; 2] = [PairStatus::Failed, PairStatus::Error];

    /// The name: the value of `execution_pairs.status` and of the JSON fields.
    pub const fn as_str(self) -> &'static str {
        match self {
            PairStatus::Queued => "QUEUED",
            PairStatus::Running => "RUNNING",
            PairStatus::Passed => "PASSED",
            PairStatus::Failed => "FAILED",
            PairStatus::Error => "ERROR",
            PairStatus::Skipped => "SKIPPED",
            PairStatus::Aborted => "ABORTED",
        }
    }

    /// Final: a result of this status ends the pair's attempt.
    pub const fn is_terminal(self) -> bool {
        !self.is_in_flight()
    }

    /// `QUEUED` or `RUNNING`: the attempt is not over (the 1014 guard and
    /// `onInFlight`, sections 7 and 8).
    pub const fn is_in_flight(self) -> bool {
        matches!(self, PairStatus::Queued | PairStatus::Running)
    }

    /// Whether a pair whose attempts had `statuses` (first to latest) is
    /// flaky: an attempt of [`PairStatus::FLAKY_FAILURES`] followed by a
    /// `PASSED` one (contract, section 6). The one Rust definition of the
    /// rule; the results consumer asks SQL the same question with these
    /// statuses (`db::results::flaky_pairs`).
    pub fn is_flaky(statuses: impl IntoIterator<Item = PairStatus>) -> bool {
        let mut failed = false;
        for status in statuses {
            if Self::FLAKY_FAILURES.contains(&status) {
                failed = true;
            } else if status == PairStatus::Passed && failed {
                return true;
            }
        }
        false
    }

    /// The names of `statuses`, joined by `separator` (for messages).
    pub fn names(statuses: &[PairStatus], separator: &str) -> String {
        statuses
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(separator)
    }
}

impl fmt::Display for PairStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that is no status's name (names are upper case, exactly).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for PairStatus {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PairStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownStatus(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_round_trips_through_its_name_and_json() {
        for status in PairStatus::ALL {
            assert_eq!(status.as_str().parse::<PairStatus>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
            assert_eq!(serde_json::from_str::<PairStatus>(&json).unwrap(), status);
        }
        assert!("passed".parse::<PairStatus>().is_err());
        assert!(serde_json::from_str::<PairStatus>("\"Passed\"").is_err());
    }

    #[test]
    fn in_flight_and_terminal_split_the_statuses() {
        let in_flight: Vec<_> = PairStatus::ALL
            .into_iter()
            .filter(|s| s.is_in_flight())
            .collect();
        assert_eq!(in_flight, [PairStatus::Queued, PairStatus::Running]);
        let terminal: Vec<_> = PairStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal, PairStatus::TERMINAL);
    }
}
