//! The daemon: opens the store, mounts, serves the control socket, unmounts on a signal.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use fybrk_control::Client;
use fybrk_fs::{fuse::FuseFs, Fs, FsConfig};
use fybrk_net::identity::{DeviceId, DeviceKey};
use fybrk_store::{Store, StoreError, StoreOptions};
use nix::sys::signal::{SigSet, Signal};

use crate::args::MountArgs;
use crate::config::MountOptions;
use crate::control::{self, Control};
use crate::mounts;
use crate::node::Node;
use crate::state::StateDir;

/// How often the daemon frees chunks nothing references any more.
const GC_INTERVAL: Duration = Duration::from_secs(600);

/// `fybrk mount DIR` without `--foreground`: checks what can be checked here (so errors reach
/// the terminal), starts the daemon as a detached child, and returns once it has mounted.
/// `config` is `--config`; `args` are the command line's (and environment's) options: the
/// child reads the config file itself, so a TURN password in it never shows in `ps`.
pub fn spawn(state: &StateDir, config: Option<&Path>, mnt: &Path, args: &MountArgs) -> Result<u32> {
    // A bad config file is reported here, on the terminal, before anything starts.
    let options = MountOptions::load(config, state, args)?;
    preflight(state, mnt)?;
    state.create()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.log())
        .with_context(|| format!("cannot open {}", state.log().display()))?;
    let exe = std::env::current_exe().context("cannot find the fybrk executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--state").arg(&state.root);
    if let (Some(_), Some(path)) = (config, &options.config_file) {
        cmd.arg("--config").arg(path);
    }
    cmd.arg("mount")
        .arg(mnt)
        .arg("--foreground")
        .arg("--notify-ready");
    cmd.args(args.to_args());
    if let Some(turn) = &args.net.turn {
        // Given as --turn or FYBRK_TURN here: either way it still beats the config file.
        cmd.env("FYBRK_TURN", turn);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        // Its own process group: Ctrl-C in this terminal must not reach the daemon.
        .process_group(0)
        .spawn()
        .context("cannot start the daemon")?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("daemon has no stdout pipe"))?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    match line.trim_end() {
        "ready" => Ok(child.id()),
        other => {
            let _ = child.wait();
            let msg = other.strip_prefix("error: ").unwrap_or(other);
            if msg.is_empty() {
                bail!(
                    "the daemon exited before mounting; see {}",
                    state.log().display()
                );
            }
            bail!("{msg}")
        }
    }
}

fn preflight(state: &StateDir, mnt: &Path) -> Result<()> {
    mounts::check_fuse()?;
    mounts::check_mount_point(mnt)?;
    if state.socket().exists() {
        let daemon = Client::new(state.socket());
        if let Ok(s) = daemon.call(fybrk_control::Status, Some(Duration::from_secs(5))) {
            bail!(
                "the state dir {} is locked by a running fybrk daemon (mounted at {}). Unmount it first or use another --state dir",
                state.root.display(),
                s.mount_point.display()
            );
        }
    }
    Ok(())
}

/// Turns a store error at start-up into advice.
fn explain_store_error(e: StoreError, state: &StateDir) -> anyhow::Error {
    if e.is_disk_full() {
        return anyhow!(
            "the disk holding {} is full: free some space and mount again",
            state.root.display()
        );
    }
    match e {
        StoreError::WrongKey => anyhow!(
            "{} does not belong to the store in {}: restore the right key file",
            state.key().display(),
            state.root.display()
        ),
        other => anyhow!("cannot open the store in {}: {other}", state.root.display()),
    }
}

/// Runs the daemon in this process until the folder is unmounted, with `options` (or the
/// reason they could not be resolved). With `notify_ready`, the first line on stdout tells the
/// parent `ready` or `error: ...`.
pub fn run(
    state: &StateDir,
    mnt: &Path,
    options: Result<MountOptions, crate::config::ConfigError>,
    notify_ready: bool,
) -> Result<()> {
    limit_malloc_arenas();
    // Block the shutdown signals before any thread starts, so only the signal thread gets them.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().context("cannot block signals")?;

    let started = options
        .map_err(anyhow::Error::from)
        .and_then(|options| start(state, mnt, options));
    if notify_ready {
        let mut out = std::io::stdout().lock();
        let line = match &started {
            Ok(_) => "ready".to_string(),
            Err(e) => format!("error: {e:#}"),
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        drop(out);
        // The parent stops reading after the first line; later prints must not hit a closed pipe.
        if let Ok(null) = std::fs::File::open("/dev/null") {
            let _ = nix::unistd::dup2_stdout(&null);
        }
    }
    // Under systemd (Type=notify): READY=1 only now, with the kernel mount and socket in place.
    crate::service::notify::started(started.as_ref().err(), mnt);
    let daemon = started?;
    tracing::info!(mount = %mnt.display(), "mounted");
    daemon.serve(signals)
}

/// glibc gives each thread that allocates its own arena; with 4 FUSE workers each handling
/// 1 MiB writes, the daemon's peak RSS doubled (100 -> 200 MiB for a 1 GiB write) from memory
/// parked in idle arenas. One arena measured both leaner and no slower here.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets a glibc tunable; it takes no pointers and is called here before
    // this process starts any thread, so nothing allocates concurrently.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Who this device is, as shown by `status` (and, later, to peers).
#[derive(Clone)]
struct Identity {
    id: DeviceId,
    name: String,
}

struct Daemon {
    state: StateDir,
    mount_point: PathBuf,
    identity: Identity,
    options: MountOptions,
    fs: Arc<Fs>,
    node: Node,
    /// Paths changed by peers, for the kernel invalidator (started with the session).
    invalidations: std::sync::mpsc::Receiver<Vec<String>>,
    session: fuser::Session<FuseFs>,
    /// The control socket, bound before `mount` returns: a `status` right after it must work.
    control: UnixListener,
    _lock: std::fs::File,
}

fn start(state: &StateDir, mnt: &Path, options: MountOptions) -> Result<Daemon> {
    preflight(state, mnt)?;
    state.create()?;
    let lock = state.lock()?;
    // The device's identity: an Ed25519 key made on first run (0600), its id derived from it.
    let device = DeviceKey::load_or_create(&state.device_key()).with_context(|| {
        format!(
            "cannot load this device's key {}",
            state.device_key().display()
        )
    })?;
    let identity = Identity {
        id: device.id(),
        name: crate::state::device_name(state, options.name.as_deref())?,
    };
    tracing::info!(device = %identity.id, name = %identity.name, "device identity");
    if let Some(path) = &options.config_file {
        tracing::info!(file = %path.display(), "read the config file");
        let shared = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0);
        if options.traversal.turn.is_some() && shared {
            tracing::warn!(file = %path.display(), "the config file holds a TURN password and other users can read it: chmod 600 it");
        }
    }
    crate::node::finish_join(state, identity.id.short())?;
    // Spill files of a previous run are unnamed (O_TMPFILE) and vanish on their own; nothing else
    // lives in staging/.
    let keys = state.load_or_create_keys()?;
    let store_options = StoreOptions {
        device: Some(identity.id.short()),
        cache_budget: options.cache_budget,
        ..StoreOptions::default()
    };
    let db = state.db(&keys);
    // Stores of folders this device left (a join finished while some thread still held one).
    for other in state.all_dbs() {
        if other != db {
            tracing::info!(dir = %other.display(), "removing the store of a folder this device left");
            let _ = std::fs::remove_dir_all(&other);
        }
    }
    let store = keys
        .open_store(&db, store_options)
        .map_err(|e| explain_store_error(e, state))?;
    std::fs::write(state.pid(), format!("{}\n", std::process::id()))?;
    collect_garbage(&store, &options.retention);
    let cfg = FsConfig {
        staging_dir: state.staging(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
    };
    let fs = Arc::new(Fs::new(store, cfg));
    let (inval_tx, invalidations) = std::sync::mpsc::channel();
    let node = Node::start(
        state,
        &device,
        &identity.name,
        fs.clone(),
        keys,
        options.listen,
        options.traversal.clone(),
        inval_tx,
    )?;
    let session = fuser::Session::new(FuseFs(fs.clone()), mnt, &fybrk_fs::fuse::mount_config())
        .map_err(|e| explain_mount_error(e, mnt))?;
    mounts::raise_readahead(mnt, 4096);
    let _ = std::fs::remove_file(state.socket());
    let control = UnixListener::bind(state.socket())
        .with_context(|| format!("cannot listen on {}", state.socket().display()))?;
    std::fs::set_permissions(state.socket(), std::fs::Permissions::from_mode(0o600))?;
    Ok(Daemon {
        state: state.clone(),
        mount_point: mnt.to_path_buf(),
        identity,
        options,
        fs,
        node,
        invalidations,
        session,
        control,
        _lock: lock,
    })
}

fn explain_mount_error(e: std::io::Error, mnt: &Path) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => anyhow!(
            "not allowed to mount at {} ({e}): run as root, or install fuse3 so fusermount3 can mount for you",
            mnt.display()
        ),
        Some(libc::ENODEV) => anyhow!("the kernel has no FUSE support ({e}): `sudo modprobe fuse`"),
        _ => anyhow!("cannot mount at {}: {e}", mnt.display()),
    }
}

impl Daemon {
    fn serve(mut self, signals: SigSet) -> Result<()> {
        let unmounter = Arc::new(Mutex::new(self.session.unmount_callable()));
        let mnt = self.mount_point.clone();
        let unmount = {
            let unmounter = unmounter.clone();
            let mnt = mnt.clone();
            move || {
                let result = unmounter
                    .lock()
                    .map_err(|_| anyhow!("unmounter poisoned"))?
                    .unmount();
                if let Err(e) = result {
                    // Busy (an app still has files open): detach now, the kernel finishes later.
                    tracing::warn!(error = %e, "unmount busy; detaching lazily");
                    mounts::lazy_unmount(&mnt)?;
                }
                Ok::<(), anyhow::Error>(())
            }
        };
        let unmount: control::Unmounter = Arc::new(unmount);

        {
            let unmount = unmount.clone();
            std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    if let Ok(sig) = signals.wait() {
                        tracing::info!(signal = ?sig, "unmounting");
                        if let Err(e) = unmount() {
                            tracing::error!(error = %e, "unmount failed");
                        }
                    }
                })?;
        }

        fybrk_fs::fuse::start_page_fill(self.fs.clone(), self.session.notifier())?;
        {
            let notifier = self.session.notifier();
            let fs = self.fs.clone();
            let rx = std::mem::replace(&mut self.invalidations, std::sync::mpsc::channel().1);
            std::thread::Builder::new()
                .name("invalidate".into())
                .spawn(move || {
                    while let Ok(mut paths) = rx.recv() {
                        // Take whatever else queued up: one pass over a burst of remote changes.
                        while let Ok(more) = rx.try_recv() {
                            paths.extend(more);
                        }
                        paths.sort_unstable();
                        paths.dedup();
                        let changes = fs.changed_remotely(&paths);
                        fybrk_fs::fuse::invalidate(&notifier, &changes);
                    }
                })?;
        }

        let listener = self.control;
        let node = Arc::new(self.node);
        let handler = || Control {
            fs: self.fs.clone(),
            node: node.clone(),
            mount_point: mnt.clone(),
            device_id: self.identity.id,
            device_name: self.identity.name.clone(),
            options: self.options.clone(),
            unmount: unmount.clone(),
        };
        {
            let handler = handler();
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || control::serve(listener, handler))?;
        }
        // The web page answers through the same handler as the control socket.
        crate::web::start(&self.state, self.options.web, handler());
        {
            let fs = self.fs.clone();
            let on_demand = self.options.cache_budget.is_some();
            std::thread::Builder::new()
                .name(if on_demand { "evict" } else { "fill" }.into())
                .spawn(move || match on_demand {
                    true => crate::ondemand::evict_forever(&fs),
                    false => crate::ondemand::fill_forever(&fs),
                })?;
        }
        {
            let fs = self.fs.clone();
            let retention = self.options.retention;
            std::thread::Builder::new()
                .name("gc".into())
                .spawn(move || loop {
                    std::thread::sleep(GC_INTERVAL);
                    collect_garbage(&fs.store(), &retention);
                })?;
        }

        let result = self.session.run();
        // `destroy` committed open files; make sure everything is on disk before we go.
        if let Err(e) = self.fs.flush_all() {
            tracing::error!(error = %e, "could not commit every open file");
        }
        if let Err(e) = self.fs.store().flush_to_disk() {
            tracing::error!(error = %e, "could not write the store's memory tables to disk");
        }
        let _ = std::fs::remove_file(self.state.socket());
        crate::web::stopped(&self.state);
        node.shutdown();
        let _ = std::fs::remove_file(self.state.pid());
        tracing::info!("unmounted; daemon exits");
        result.context("the FUSE session failed")
    }
}

/// Retention, then garbage collection, logged (at start and every [`GC_INTERVAL`]).
fn collect_garbage(store: &Store, retention: &fybrk_store::history::Retention) {
    match crate::history::collect(store, retention) {
        Ok(r) if r.freed_chunks > 0 || r.versions_dropped > 0 => tracing::info!(
            versions = r.versions_dropped,
            chunks = r.freed_chunks,
            bytes = r.freed_bytes,
            history_bytes = r.history_bytes,
            "history thinned and unreferenced chunks freed"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
    }
}
