//! What this device keeps: `status`'s `storage` section, and `pin`, `unpin`, `free` and `ls`
//! (on-demand devices: every file is visible, content is fetched when read).

use serde::{Deserialize, Serialize};

/// `status`'s `storage`: the device's mode, its cache, what is pinned, and files lately
/// unreadable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageStatus {
    /// `"full"` (keeps every file's content) or `"on_demand"` (fetches content when read,
    /// keeps what the cache allows).
    pub mode: String,
    /// Bytes of the live files' content held on this device (holes excluded): on a full
    /// device, all of it.
    pub local_bytes: u64,
    /// Bytes of the live files' content (holes excluded).
    pub total_bytes: u64,
    /// On-demand: the most encrypted content kept, in bytes (`null` on a full device).
    pub cache_budget: Option<u64>,
    /// On-demand: encrypted content kept now, in bytes (content only this device has counts
    /// and is never dropped, so this may pass the budget until other devices have it).
    pub cache_used: Option<u64>,
    /// Paths kept on this device whatever its mode (`fybrk pin`; `""` is the whole folder).
    pub pinned: Vec<String>,
    /// Bytes of content under the pinned paths.
    pub pinned_bytes: u64,
    /// Files whose content could not be fetched lately (oldest first, at most 32): a read
    /// failed with `EHOSTUNREACH`.
    pub unreadable: Vec<UnreadableFile>,
}

/// A file whose content could not be fetched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadableFile {
    /// Its path in the folder.
    pub path: String,
    /// When (nanoseconds since the Unix epoch).
    pub at_ns: i64,
    /// Why, as the fetch said.
    pub reason: String,
}

/// Keep files on this device and fetch what they lack now:
/// `{"cmd":"pin","paths":["docs"]}`. Paths are relative to the folder (`""` is all of it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The files or trees.
    pub paths: Vec<String>,
}

/// Stop keeping files on this device whatever the cache needs: `{"cmd":"unpin","paths":[..]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unpin {
    /// The files or trees, as pinned.
    pub paths: Vec<String>,
}

/// The answer to `pin` and `unpin`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinReply {
    /// Every pinned path now.
    pub pinned: Vec<String>,
    /// Chunks fetched for the new pins.
    pub fetched_chunks: u64,
    /// Their bytes.
    pub fetched_bytes: u64,
    /// Chunks that could not be fetched (no connected device had them); run `pin` again later.
    pub missing_chunks: u64,
}

/// Drop the local content of files now, where another device keeps it:
/// `{"cmd":"free","paths":["videos"]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Free {
    /// The files or trees.
    pub paths: Vec<String>,
}

/// The answer to `free`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreeReply {
    /// Encrypted bytes dropped.
    pub freed_bytes: u64,
    /// Chunks dropped.
    pub freed_chunks: u64,
    /// Chunks kept because no other device is known to keep them yet.
    pub kept_only_here: u64,
    /// Chunks kept because a file using them is open or pinned.
    pub kept_pinned: u64,
}

/// Where each file's content is: `{"cmd":"ls","path":"docs"}` (`""` is the folder's root).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ls {
    /// A directory (its entries are listed) or a file.
    pub path: String,
}

/// The answer to `ls`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsReply {
    /// The entries, by name.
    pub entries: Vec<LsEntry>,
}

/// One entry of `ls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsEntry {
    /// Its path in the folder.
    pub path: String,
    /// `"file"`, `"dir"` or `"symlink"`.
    pub kind: String,
    /// Its size in bytes (files).
    pub size: u64,
    /// Bytes of its content held here (files; holes excluded).
    pub local_bytes: u64,
    /// `"local"` (all content here), `"partial"` or `"remote"` (none here); directories and
    /// symlinks are `"local"`.
    pub state: String,
    /// Whether it is kept on this device whatever the cache needs (`fybrk pin`).
    pub pinned: bool,
}
