//! Model test: random file operations applied both through the mount and to a plain directory on
//! the native disk must leave the same tree (names, kinds, bytes, modes, symlink targets), also
//! after an unmount and remount.
//!
//! The seed is printed; replay a failure with `FYBRK_MODEL_SEED=<seed>` (and optionally
//! `FYBRK_MODEL_OPS=<n>` to change the number of operations).

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use fybrk_tests::{diff_trees, seed_from_env, snapshot, Compare, Gen, Mount};

/// Files stay below this size so 3,000 operations finish well inside two minutes.
const MAX_FILE: u64 = 256 * 1024;
/// Trees are compared after every this many operations.
const CHECK_EVERY: usize = 500;
const FILE_MODES: [u32; 6] = [0o600, 0o644, 0o640, 0o755, 0o700, 0o664];
const DIR_MODES: [u32; 4] = [0o755, 0o750, 0o700, 0o775];

#[derive(Debug)]
enum Op {
    Create {
        path: PathBuf,
        data: Vec<u8>,
    },
    /// Several writes on one handle before it is closed.
    WriteAt {
        path: PathBuf,
        writes: Vec<(u64, Vec<u8>)>,
    },
    Append {
        path: PathBuf,
        data: Vec<u8>,
    },
    Truncate {
        path: PathBuf,
        len: u64,
        by_path: bool,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    Unlink {
        path: PathBuf,
    },
    Mkdir {
        path: PathBuf,
    },
    Rmdir {
        path: PathBuf,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    Chmod {
        path: PathBuf,
        mode: u32,
    },
    Read {
        path: PathBuf,
        off: u64,
        len: usize,
    },
}

impl Op {
    /// One line for the replay log (data shown as its length only).
    fn describe(&self) -> String {
        match self {
            Op::Create { path, data } => {
                format!("create {} ({} bytes)", path.display(), data.len())
            }
            Op::WriteAt { path, writes } => {
                let w: Vec<String> = writes
                    .iter()
                    .map(|(o, d)| format!("{}@{o}", d.len()))
                    .collect();
                format!("write {} [{}]", path.display(), w.join(", "))
            }
            Op::Append { path, data } => {
                format!("append {} ({} bytes)", path.display(), data.len())
            }
            Op::Truncate { path, len, by_path } => {
                format!("truncate {} to {len} (by path: {by_path})", path.display())
            }
            Op::Rename { from, to } => format!("rename {} -> {}", from.display(), to.display()),
            Op::Unlink { path } => format!("unlink {}", path.display()),
            Op::Mkdir { path } => format!("mkdir {}", path.display()),
            Op::Rmdir { path } => format!("rmdir {}", path.display()),
            Op::Symlink { path, target } => {
                format!("symlink {} -> {}", path.display(), target.display())
            }
            Op::Chmod { path, mode } => format!("chmod {:o} {}", mode, path.display()),
            Op::Read { path, off, len } => format!("read {} {len}@{off}", path.display()),
        }
    }
}

/// Applies `op` below `root`; `Read` returns the bytes read.
fn apply(root: &Path, op: &Op) -> io::Result<Option<Vec<u8>>> {
    match op {
        Op::Create { path, data } => {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(root.join(path))?;
            f.write_all(data)?;
        }
        Op::WriteAt { path, writes } => {
            let f = OpenOptions::new().write(true).open(root.join(path))?;
            for (off, data) in writes {
                f.write_all_at(data, *off)?;
            }
        }
        Op::Append { path, data } => {
            OpenOptions::new()
                .append(true)
                .open(root.join(path))?
                .write_all(data)?;
        }
        Op::Truncate { path, len, by_path } => {
            if *by_path {
                let c = fybrk_tests::cpath(&root.join(path));
                if unsafe { libc::truncate(c.as_ptr(), *len as libc::off_t) } != 0 {
                    return Err(io::Error::last_os_error());
                }
            } else {
                OpenOptions::new()
                    .write(true)
                    .open(root.join(path))?
                    .set_len(*len)?;
            }
        }
        Op::Rename { from, to } => fs::rename(root.join(from), root.join(to))?,
        Op::Unlink { path } => fs::remove_file(root.join(path))?,
        Op::Mkdir { path } => fs::create_dir(root.join(path))?,
        Op::Rmdir { path } => fs::remove_dir(root.join(path))?,
        Op::Symlink { path, target } => std::os::unix::fs::symlink(target, root.join(path))?,
        Op::Chmod { path, mode } => {
            fs::set_permissions(root.join(path), fs::Permissions::from_mode(*mode))?
        }
        Op::Read { path, off, len } => {
            let f = fs::File::open(root.join(path))?;
            let mut buf = vec![0u8; *len];
            let mut got = 0;
            while got < *len {
                let n = f.read_at(&mut buf[got..], off + got as u64)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            buf.truncate(got);
            return Ok(Some(buf));
        }
    }
    Ok(None)
}

/// What exists, so operations can pick valid targets. Paths are relative; the root is "".
struct Model {
    files: Vec<PathBuf>,
    links: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    next: u64,
}

impl Model {
    fn name(&mut self, prefix: &str, g: &mut Gen) -> String {
        self.next += 1;
        // Some names with spaces and non-ASCII, to catch encoding slips.
        match g.below(10) {
            0 => format!("{prefix} {} spaced", self.next),
            1 => format!("{prefix}-ünï-{}", self.next),
            _ => format!("{prefix}{}", self.next),
        }
    }

    fn any_dir(&self, g: &mut Gen) -> PathBuf {
        // Index 0..=len, where len means the root.
        let i = g.below(self.dirs.len() as u64 + 1) as usize;
        self.dirs.get(i).cloned().unwrap_or_default()
    }

    fn pick<'a>(v: &'a [PathBuf], g: &mut Gen) -> Option<&'a PathBuf> {
        if v.is_empty() {
            None
        } else {
            Some(&v[g.below(v.len() as u64) as usize])
        }
    }

    fn is_empty_dir(&self, d: &Path) -> bool {
        let child = |p: &PathBuf| p.parent() == Some(d);
        !self.files.iter().any(child)
            && !self.links.iter().any(child)
            && !self.dirs.iter().any(child)
    }

    /// Chooses the next operation (reading sizes from the reference tree) and updates the model
    /// as if it succeeds.
    fn next_op(&mut self, g: &mut Gen, reference: &Path) -> Op {
        loop {
            let roll = g.below(100);
            let op = match roll {
                0..=13 => {
                    let dir = self.any_dir(g);
                    let path = dir.join(self.name("f", g));
                    let len = if g.chance(20) {
                        0
                    } else {
                        g.below(64 * 1024) as usize
                    };
                    Some(Op::Create {
                        path,
                        data: g.bytes(len),
                    })
                }
                14..=28 => Self::pick(&self.files, g).cloned().map(|path| {
                    let size = fs::metadata(reference.join(&path))
                        .map(|m| m.len())
                        .unwrap_or(0);
                    let n = g.range(1, 3);
                    let writes = (0..n)
                        .map(|_| {
                            let len = g.range(1, 32 * 1024);
                            // Up to 16 KiB past the end, to make holes.
                            let off = g.below((size + 16 * 1024).min(MAX_FILE - len) + 1);
                            (off, g.bytes(len as usize))
                        })
                        .collect();
                    Op::WriteAt { path, writes }
                }),
                29..=36 => Self::pick(&self.files, g).cloned().and_then(|path| {
                    let size = fs::metadata(reference.join(&path))
                        .map(|m| m.len())
                        .unwrap_or(0);
                    let len = g.range(1, 16 * 1024);
                    (size + len <= MAX_FILE).then(|| Op::Append {
                        path,
                        data: g.bytes(len as usize),
                    })
                }),
                37..=42 => Self::pick(&self.files, g).cloned().map(|path| {
                    let size = fs::metadata(reference.join(&path))
                        .map(|m| m.len())
                        .unwrap_or(0);
                    let len = g.below((size + 8 * 1024).min(MAX_FILE) + 1);
                    Op::Truncate {
                        path,
                        len,
                        by_path: g.chance(50),
                    }
                }),
                43..=50 => {
                    // Rename a file or symlink: to a new name, or over another non-directory.
                    let pool: Vec<PathBuf> =
                        self.files.iter().chain(&self.links).cloned().collect();
                    Self::pick(&pool, g).cloned().map(|from| {
                        let to = if g.chance(30) {
                            Self::pick(&pool, g).cloned().unwrap()
                        } else {
                            let d = self.any_dir(g);
                            d.join(self.name("r", g))
                        };
                        Op::Rename { from, to }
                    })
                }
                51..=53 => Self::pick(&self.dirs, g).cloned().and_then(|from| {
                    let d = self.any_dir(g);
                    (!d.starts_with(&from)).then(|| Op::Rename {
                        to: d.join(self.name("rd", g)),
                        from,
                    })
                }),
                54..=59 => {
                    let pool: Vec<PathBuf> =
                        self.files.iter().chain(&self.links).cloned().collect();
                    // Keep a population: unlink less often when there are few files.
                    (pool.len() > 10)
                        .then(|| {
                            Self::pick(&pool, g)
                                .cloned()
                                .map(|path| Op::Unlink { path })
                        })
                        .flatten()
                }
                60..=66 => {
                    let d = self.any_dir(g);
                    (self.dirs.len() < 60).then(|| Op::Mkdir {
                        path: d.join(self.name("d", g)),
                    })
                }
                67..=69 => {
                    let empty: Vec<PathBuf> = self
                        .dirs
                        .iter()
                        .filter(|d| self.is_empty_dir(d))
                        .cloned()
                        .collect();
                    Self::pick(&empty, g)
                        .cloned()
                        .map(|path| Op::Rmdir { path })
                }
                70..=73 => {
                    let d = self.any_dir(g);
                    let target = match g.below(3) {
                        0 => PathBuf::from(format!("../t{}", g.below(1000))),
                        1 => Self::pick(&self.files, g)
                            .cloned()
                            .unwrap_or_else(|| PathBuf::from("none")),
                        _ => PathBuf::from(format!("/abs/target/{}", g.below(1000))),
                    };
                    Some(Op::Symlink {
                        path: d.join(self.name("l", g)),
                        target,
                    })
                }
                74..=80 => {
                    if g.chance(70) {
                        Self::pick(&self.files, g).cloned().map(|path| Op::Chmod {
                            path,
                            mode: FILE_MODES[g.below(6) as usize],
                        })
                    } else {
                        Self::pick(&self.dirs, g).cloned().map(|path| Op::Chmod {
                            path,
                            mode: DIR_MODES[g.below(4) as usize],
                        })
                    }
                }
                _ => Self::pick(&self.files, g).cloned().map(|path| {
                    let size = fs::metadata(reference.join(&path))
                        .map(|m| m.len())
                        .unwrap_or(0);
                    if g.chance(40) {
                        Op::Read {
                            path,
                            off: 0,
                            len: size as usize + 10,
                        }
                    } else {
                        let off = g.below(size + 100);
                        Op::Read {
                            path,
                            off,
                            len: g.range(1, 64 * 1024) as usize,
                        }
                    }
                }),
            };
            if let Some(op) = op {
                self.update(&op);
                return op;
            }
        }
    }

    fn update(&mut self, op: &Op) {
        match op {
            Op::Create { path, .. } => self.files.push(path.clone()),
            Op::Mkdir { path } => self.dirs.push(path.clone()),
            Op::Symlink { path, .. } => self.links.push(path.clone()),
            Op::Unlink { path } => {
                self.files.retain(|p| p != path);
                self.links.retain(|p| p != path);
            }
            Op::Rmdir { path } => self.dirs.retain(|p| p != path),
            Op::Rename { from, to } if from == to => {}
            Op::Rename { from, to } => {
                if self.dirs.contains(from) {
                    let move_under = |p: &mut PathBuf| {
                        if let Ok(rest) = p.strip_prefix(from) {
                            *p = to.join(rest);
                        }
                    };
                    self.dirs.iter_mut().for_each(move_under);
                    self.files.iter_mut().for_each(move_under);
                    self.links.iter_mut().for_each(move_under);
                } else {
                    // A replaced target disappears, whatever its kind was.
                    self.files.retain(|p| p != to);
                    self.links.retain(|p| p != to);
                    for v in [&mut self.files, &mut self.links] {
                        for p in v.iter_mut() {
                            if p == from {
                                *p = to.clone();
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[test]
fn random_operations_match_a_plain_directory() {
    let Some(mut m) = Mount::start() else { return };
    let seed = seed_from_env("FYBRK_MODEL_SEED");
    let ops: usize = std::env::var("FYBRK_MODEL_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    eprintln!("model test: seed {seed} ({ops} ops); replay with FYBRK_MODEL_SEED={seed}");
    let _ = writeln!(io::stderr(), "model test seed: {seed}");

    let reference = m.root().join("reference");
    fs::create_dir(&reference).unwrap();
    let mut g = Gen::new(seed);
    let mut model = Model {
        files: Vec::new(),
        links: Vec::new(),
        dirs: Vec::new(),
        next: 0,
    };
    let mut history: Vec<String> = Vec::new();
    let cmp = Compare {
        file_mtime: false,
        dir_mtime: false,
    };
    let start = Instant::now();

    let context = |history: &[String]| {
        let from = history.len().saturating_sub(40);
        format!(
            "seed {seed} (replay: FYBRK_MODEL_SEED={seed}); last operations:\n  {}",
            history[from..].join("\n  ")
        )
    };
    let compare = |m: &Mount, history: &[String], when: &str| {
        let want = snapshot(&reference).expect("snapshot of the reference dir");
        let got = m.ok(snapshot(&m.mnt), format!("snapshot of the mount {when}"));
        if let Some(d) = diff_trees(&want, &got, cmp) {
            m.fail(&format!(
                "{when}: the mount differs from the reference: {d}\n{}",
                context(history)
            ));
        }
        want.len()
    };

    for i in 0..ops {
        let op = model.next_op(&mut g, &reference);
        history.push(format!("#{i}: {}", op.describe()));
        let want = apply(&reference, &op);
        let got = apply(&m.mnt, &op);
        match (&want, &got) {
            (Err(e), _) => panic!(
                "model bug: the reference dir refused op #{i} {}: {e}\n{}",
                op.describe(),
                context(&history)
            ),
            (Ok(_), Err(e)) => m.fail(&format!(
                "op #{i} failed on the mount: {e} (errno {:?})\n{}",
                e.raw_os_error(),
                context(&history)
            )),
            (Ok(Some(a)), Ok(Some(b))) if a != b => m.fail(&format!(
                "op #{i} read different bytes: {}\n{}",
                fybrk_tests::diff_bytes(a, b).unwrap_or_default(),
                context(&history)
            )),
            _ => {}
        }
        if (i + 1) % CHECK_EVERY == 0 {
            let n = compare(&m, &history, &format!("after {} ops", i + 1));
            eprintln!(
                "after {} ops: {n} entries equal ({:?})",
                i + 1,
                start.elapsed()
            );
        }
        if i + 1 == ops / 2 {
            // A remount half way: the second half then works on a reopened store.
            m.remount();
            history.push("-- unmount + remount --".into());
            compare(&m, &history, "after the half-way remount");
        }
    }
    compare(&m, &history, "at the end");
    m.remount();
    let n = compare(&m, &history, "after unmount + remount");
    eprintln!("after remount: {n} entries equal ({:?})", start.elapsed());
    m.assert_verify_ok();
}
