//! pjdfstest, the POSIX conformance suite (vendored in `tests/pjdfstest/`), on one real fybrk
//! mount. Every .t file runs under `prove` with a deadline; the test fails when a file hangs, the
//! mount dies, or a test fails that `tests/pjdfstest/expected.txt` does not list with a reason.
//!
//! `PJDFS_ONLY=chmod/` runs only the .t files whose name contains that text (for development).

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fybrk_tests::{have_tool, in_ci, is_mounted, pid_alive, Mount};

/// One .t file's deadline: a hang is what this catches. chown/00.t sleeps a second 50 times and
/// takes ~85 s even on ext4; the others take under 20 s.
const FILE_TIMEOUT: Duration = Duration::from_secs(150);
/// How long the mount may take to answer a `stat` or to be emptied between files.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The classes a failure may be filed under in expected.txt (see its header for what each means).
const CLASSES: &[&str] = &[
    "multi-user",
    "hard-links",
    "fifo-device-socket",
    "times",
    "fybrk-semantics",
];

fn pjd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pjdfstest")
}

/// Every .t file under `dir`, as paths relative to `root`, sorted.
fn t_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            t_files(root, &p, out);
        } else if p.extension().is_some_and(|e| e == "t") {
            let rel = p.strip_prefix(root).unwrap();
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

/// "5-12,14" -> {5..=12, 14}.
fn parse_numbers(s: &str) -> Result<BTreeSet<u32>, String> {
    let mut set = BTreeSet::new();
    for part in s.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let lo: u32 = lo.parse().map_err(|_| format!("bad number in {s:?}"))?;
        let hi: u32 = hi.parse().map_err(|_| format!("bad number in {s:?}"))?;
        if lo > hi {
            return Err(format!("bad range in {s:?}"));
        }
        set.extend(lo..=hi);
    }
    Ok(set)
}

/// {5,6,7,9} -> "5-7,9".
fn format_numbers(set: &BTreeSet<u32>) -> String {
    let mut out = String::new();
    let mut it = set.iter().copied().peekable();
    while let Some(lo) = it.next() {
        let mut hi = lo;
        while it.peek() == Some(&(hi + 1)) {
            hi = it.next().unwrap();
        }
        if !out.is_empty() {
            out.push(',');
        }
        if lo == hi {
            let _ = write!(out, "{lo}");
        } else {
            let _ = write!(out, "{lo}-{hi}");
        }
    }
    out
}

/// One line of expected.txt: `FILE NUMBERS CLASS: reason`.
struct Expected {
    numbers: BTreeSet<u32>,
    class: String,
}

/// expected.txt as file -> its lines. Panics on a malformed line or an unknown class or file.
fn load_expected(files: &[String]) -> BTreeMap<String, Vec<Expected>> {
    let path = pjd_dir().join("expected.txt");
    let text = fs::read_to_string(&path).unwrap();
    let mut map: BTreeMap<String, Vec<Expected>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| -> ! { panic!("expected.txt line {}: {why}: {line}", i + 1) };
        let mut words = line.splitn(4, char::is_whitespace);
        let (Some(file), Some(nums), Some(class)) = (words.next(), words.next(), words.next())
        else {
            bad("want `FILE NUMBERS CLASS: reason`")
        };
        let Some(class) = class.strip_suffix(':') else {
            bad("the class ends with ':'")
        };
        if !CLASSES.contains(&class) {
            bad(&format!("unknown class (known: {CLASSES:?})"));
        }
        if words.next().is_none_or(|r| r.trim().is_empty()) {
            bad("a reason is required");
        }
        if !files.iter().any(|f| f == file) {
            bad("no such .t file");
        }
        let numbers = parse_numbers(nums).unwrap_or_else(|e| bad(&e));
        map.entry(file.to_string()).or_default().push(Expected {
            numbers,
            class: class.to_string(),
        });
    }
    map
}

/// Runs `cmd` in a process group of its own, output to a temp file. On the deadline the whole
/// group is killed (a .t file is a shell running pjdfstest children) and `None` is returned.
fn run_group(cmd: &mut Command, timeout: Duration) -> (Option<ExitStatus>, String) {
    let mut out = tempfile::tempfile().unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out.try_clone().unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > timeout {
            let pgid = child.id() as i32;
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::new();
    out.seek(SeekFrom::Start(0)).unwrap();
    let mut bytes = Vec::new();
    out.read_to_end(&mut bytes).unwrap();
    text.push_str(&String::from_utf8_lossy(&bytes));
    (status, text)
}

/// Whether a `stat` of the mount root returns within the deadline (on another thread: a dead
/// FUSE mount can block the caller for good).
fn answers(mnt: &Path) -> bool {
    let (tx, rx) = mpsc::channel();
    let mnt = mnt.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(fs::metadata(&mnt).is_ok());
    });
    rx.recv_timeout(ANSWER_TIMEOUT).unwrap_or(false)
}

/// The failing test numbers in `prove -v` output: `not ok N` lines that are not TODO. A script
/// that died or broke its plan without a `not ok` counts as test 0.
fn failures(status: ExitStatus, output: &str) -> BTreeSet<u32> {
    let mut set = BTreeSet::new();
    for line in output.lines() {
        let Some(rest) = line.strip_prefix("not ok ") else {
            continue;
        };
        if rest.contains("# TODO") {
            continue;
        }
        let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = n.parse() {
            set.insert(n);
        }
    }
    if !status.success() && set.is_empty() {
        set.insert(0);
    }
    set
}

#[derive(Default)]
struct Tally {
    ok: usize,
    expected_fail: usize,
    unexpected: usize,
    hung: usize,
}

/// What one worker saw over its share of the .t files.
#[derive(Default)]
struct Outcome {
    tally: Tally,
    per_class: BTreeMap<String, usize>,
    problems: String,
    now_passing: String,
    /// The file after which the mount stopped answering, if it did.
    mount_died: Option<String>,
}

impl Outcome {
    fn add(&mut self, o: Outcome) {
        self.tally.ok += o.tally.ok;
        self.tally.expected_fail += o.tally.expected_fail;
        self.tally.unexpected += o.tally.unexpected;
        self.tally.hung += o.tally.hung;
        for (class, n) in o.per_class {
            *self.per_class.entry(class).or_default() += n;
        }
        self.problems.push_str(&o.problems);
        self.now_passing.push_str(&o.now_passing);
        if self.mount_died.is_none() {
            self.mount_died = o.mount_died;
        }
    }
}

/// Two workers, each with its own mount and every other file: most of the time goes to the
/// scripts' own sleeps (chown/00.t alone sleeps 50 times), which overlap; one mount at a time
/// took 230 s of CI.
const WORKERS: usize = 2;

#[test]
fn pjdfstest_passes_or_fails_only_as_expected() {
    let pjd = pjd_dir();
    let helper = pjd.join("pjdfstest");
    if !helper.is_file() {
        let why = format!(
            "{} is not built: run scripts/setup-deps.sh --test",
            helper.display()
        );
        assert!(!in_ci(), "CI must run pjdfstest, but {why}");
        let _ = std::io::stderr()
            .write_all(format!("\n!!!!!!!!!! SKIPPED: {why} !!!!!!!!!!\n").as_bytes());
        return;
    }
    if !have_tool("prove") {
        return;
    }
    let tests_dir = pjd.join("tests");
    let mut files = Vec::new();
    t_files(&tests_dir, &tests_dir, &mut files);
    assert!(files.len() > 200, "only {} .t files found", files.len());
    let expected = load_expected(&files);
    let only = std::env::var("PJDFS_ONLY").unwrap_or_default();
    let files: Vec<String> = files.into_iter().filter(|f| f.contains(&only)).collect();

    let mut mounts = Vec::new();
    for _ in 0..WORKERS {
        let Some(m) = Mount::start() else { return };
        mounts.push(m);
    }
    let started = Instant::now();
    let mut all = Outcome::default();
    std::thread::scope(|scope| {
        let workers: Vec<_> = mounts
            .iter()
            .enumerate()
            .map(|(w, m)| {
                let mine: Vec<&String> = files.iter().skip(w).step_by(WORKERS).collect();
                let (expected, tests_dir) = (&expected, &tests_dir);
                scope.spawn(move || run_files(m, &mine, expected, tests_dir))
            })
            .collect();
        for w in workers {
            all.add(w.join().expect("a pjdfstest worker panicked"));
        }
    });

    let secs = started.elapsed().as_secs();
    let tally = &all.tally;
    let mut summary = format!(
        "\npjdfstest on fybrk: {} files in {secs} s ({WORKERS} mounts)\n  ok              {}\n  \
         expected-fail   {}\n  unexpected      {}\n  hung            {}\n  failing tests by class:",
        tally.ok + tally.expected_fail + tally.unexpected + tally.hung,
        tally.ok,
        tally.expected_fail,
        tally.unexpected,
        tally.hung
    );
    for (class, n) in &all.per_class {
        let _ = write!(summary, " {class} {n},");
    }
    if summary.ends_with(',') {
        summary.pop();
    }
    eprintln!("{summary}\n{}", all.now_passing);

    let m = &mounts[0];
    if let Some(file) = all.mount_died {
        m.fail(&format!(
            "a mount stopped answering after {file}\n{}",
            all.problems
        ));
    }
    if !all.problems.is_empty() {
        m.fail(&format!("{}{summary}", all.problems));
    }
}

/// Runs `files` one after another on mount `m`, each from an empty folder.
fn run_files(
    m: &Mount,
    files: &[&String],
    expected: &BTreeMap<String, Vec<Expected>>,
    tests_dir: &Path,
) -> Outcome {
    let pid = m.pid();
    let mut o = Outcome::default();
    for &file in files {
        let t0 = Instant::now();
        let (status, output) = run_group(
            Command::new("prove")
                .arg("-v")
                .arg(tests_dir.join(file))
                .current_dir(&m.mnt),
            FILE_TIMEOUT,
        );
        let secs = t0.elapsed().as_secs_f64();
        let mut verdict = String::from("hung");
        let want: BTreeSet<u32> = expected
            .get(file)
            .map(|v| v.iter().flat_map(|e| e.numbers.iter().copied()).collect())
            .unwrap_or_default();
        match status {
            None => {
                o.tally.hung += 1;
                let _ = writeln!(
                    o.problems,
                    "HUNG {file}: killed after {FILE_TIMEOUT:?}\n{output}"
                );
            }
            Some(status) => {
                let got = failures(status, &output);
                verdict = if got.is_empty() {
                    "ok".into()
                } else {
                    format!("fails {}", format_numbers(&got))
                };
                let new: BTreeSet<u32> = got.difference(&want).copied().collect();
                let gone: BTreeSet<u32> = want.difference(&got).copied().collect();
                if !new.is_empty() {
                    o.tally.unexpected += 1;
                    let _ = writeln!(
                        o.problems,
                        "UNEXPECTED {file}: tests {} fail and are not in expected.txt (0 = the \
                         script died or broke its plan)\n{output}",
                        format_numbers(&new)
                    );
                } else if got.is_empty() {
                    o.tally.ok += 1;
                } else {
                    o.tally.expected_fail += 1;
                }
                if !gone.is_empty() {
                    let _ = writeln!(
                        o.now_passing,
                        "now passes: remove from expected.txt: {file} {}",
                        format_numbers(&gone)
                    );
                }
                for e in expected.get(file).into_iter().flatten() {
                    *o.per_class.entry(e.class.clone()).or_default() +=
                        e.numbers.intersection(&got).count();
                }
            }
        }
        eprintln!("pjdfs: {secs:5.1}s {file} {verdict}");

        if !pid_alive(pid) || !is_mounted(&m.mnt) || !answers(&m.mnt) {
            o.mount_died = Some(file.clone());
            break;
        }
        // pjdfstest leaves files behind when a test fails; each file starts from an empty folder.
        let (status, output) = run_group(
            Command::new("sh")
                .args([
                    "-c",
                    "chmod -R u+rwx . 2>/dev/null; find . -mindepth 1 -maxdepth 1 -exec rm -rf {} +",
                ])
                .current_dir(&m.mnt),
            ANSWER_TIMEOUT,
        );
        let left: Vec<_> = fs::read_dir(&m.mnt)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if status.is_none() || !left.is_empty() {
            let _ = writeln!(
                o.problems,
                "CLEANUP after {file}: could not empty the mount ({status:?}, left {left:?})\n{output}"
            );
            break;
        }
    }
    o
}

/// expected.txt parses, names only existing .t files and known classes (no mount needed).
#[test]
fn expected_txt_is_well_formed() {
    let tests_dir = pjd_dir().join("tests");
    let mut files = Vec::new();
    t_files(&tests_dir, &tests_dir, &mut files);
    let expected = load_expected(&files);
    assert!(expected.len() > 50, "only {} files listed", expected.len());
    for (file, lines) in &expected {
        let all: usize = lines.iter().map(|e| e.numbers.len()).sum();
        let distinct: BTreeSet<u32> = lines
            .iter()
            .flat_map(|e| e.numbers.iter().copied())
            .collect();
        assert_eq!(all, distinct.len(), "{file}: a test number is listed twice");
    }
}

#[test]
fn numbers_round_trip_and_tap_failures_are_read() {
    let set = parse_numbers("5-7,9,11-12").unwrap();
    assert_eq!(
        set.iter().copied().collect::<Vec<_>>(),
        [5, 6, 7, 9, 11, 12]
    );
    assert_eq!(format_numbers(&set), "5-7,9,11-12");
    assert!(parse_numbers("7-5").is_err());
    assert!(parse_numbers("x").is_err());

    let ok = Command::new("true").status().unwrap();
    let bad = Command::new("false").status().unwrap();
    let tap = "1..5\nok 1\nnot ok 2 - tried 'x'\nnot ok 3 # TODO known\nnot ok 4\nok 5\n";
    assert_eq!(format_numbers(&failures(bad, tap)), "2,4");
    // A script that bailed out before any `not ok` is test 0; a clean exit is no failure.
    assert_eq!(
        format_numbers(&failures(bad, "1..7\nok 1\nBail out!\n")),
        "0"
    );
    assert!(failures(ok, "1..1\nok 1\n").is_empty());
}

/// A timed-out file is killed with its whole process group, children included.
#[test]
fn a_timeout_kills_the_whole_process_group() {
    let mark = tempfile::NamedTempFile::new().unwrap();
    let start = Instant::now();
    let (status, _) = run_group(
        Command::new("sh").arg("-c").arg(format!(
            "(sleep 3; echo late > {}) & sleep 30",
            mark.path().display()
        )),
        Duration::from_millis(500),
    );
    assert!(status.is_none(), "not reported as hung: {status:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "kill took {:?}",
        start.elapsed()
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        fs::read_to_string(mark.path()).unwrap(),
        "",
        "a child survived the kill"
    );
}
