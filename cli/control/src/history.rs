//! History commands: `log` (the kept versions of a path) and `restore` (bring a path or a tree
//! back as it was).

use serde::{Deserialize, Serialize};

/// The versions kept of a path (a directory: of everything under it too), newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Log {
    /// The path inside the folder, `/`-separated, no leading slash ("" = the whole folder).
    pub path: String,
    /// At most this many versions (`null`: all).
    pub limit: Option<u64>,
}

/// Bring a path back as it was. Exactly one of `at_ns` and `version` is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    /// The path inside the folder ("" = the whole folder).
    pub path: String,
    /// As it was at this time, nanoseconds since the Unix epoch.
    pub at_ns: Option<i64>,
    /// This version (an id from [`LogEntry::id`]).
    pub version: Option<u64>,
    /// Restore to this path inside the folder instead of in place (`null`: in place).
    pub to: Option<String>,
}

/// `log`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogReply {
    /// The path asked for.
    pub path: String,
    /// The versions, newest first.
    pub versions: Vec<LogEntry>,
}

/// One kept version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The version's id on this device (for `restore --version`).
    pub id: u64,
    /// Its path.
    pub path: String,
    /// When this device committed it, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// The device that made it: the first group of its id (as in conflict copy names), or
    /// `null` when that cannot be told.
    pub device: Option<String>,
    /// True when this device made it.
    pub this_device: bool,
    /// What happened: `create`, `edit`, `delete`, `rename`, `conflict` or `restore`.
    pub event: String,
    /// For a rename: the path it came from (`null` otherwise).
    pub renamed_from: Option<String>,
    /// For a rename: the path it went to (`null` otherwise).
    pub renamed_to: Option<String>,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    /// Size in bytes (0 for a deletion).
    pub size: u64,
    /// True for a deletion.
    pub deleted: bool,
}

/// `restore`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReply {
    /// Paths brought back (created or changed).
    pub restored: u64,
    /// Paths deleted because they did not exist then (in-place restores of a directory only).
    pub deleted: u64,
    /// Bytes of the files brought back.
    pub bytes: u64,
    /// The paths written, parents first (at most 1,000 listed).
    pub paths: Vec<String>,
}
