//! `fybrk`: the command line and the daemon.

mod config;
mod control;
mod daemon;
mod mounts;
mod node;
mod pairing;
mod peers;
mod state;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use fybrk_store::{Store, StoreOptions};
use serde_json::Value;

use crate::control::Request;
use crate::state::StateDir;

/// fybrk: an encrypted, deduplicating folder that syncs between your devices.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// State directory (database, key, socket, log). Default: $XDG_DATA_HOME/fybrk.
    #[arg(long, global = true, env = "FYBRK_STATE", value_name = "DIR")]
    state: Option<PathBuf>,
    /// Config file with defaults for `mount` (listen, name, rendezvous, stun, turn). Default:
    /// config.toml in the state dir, if it exists.
    #[arg(long, global = true, env = "FYBRK_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount the folder at DIR and leave a daemon serving it.
    Mount {
        /// An existing, empty directory.
        dir: PathBuf,
        /// Stay attached; Ctrl-C or SIGTERM unmounts.
        #[arg(long)]
        foreground: bool,
        /// This device's name as other devices see it (also the config file's `name`;
        /// default: the hostname). Remembered.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        net: daemon::NetArgs,
        /// Internal: report readiness on stdout (used when daemonizing).
        #[arg(long, hide = true)]
        notify_ready: bool,
    },
    /// Unmount DIR and stop its daemon.
    Unmount {
        /// The mount point.
        dir: PathBuf,
    },
    /// Show the folder and its peers: files, sizes, connections, sync progress.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Redraw every second, with a progress bar while syncing (Ctrl-C to stop).
        #[arg(long, conflicts_with = "json")]
        watch: bool,
    },
    /// Invite another device into this folder: shows a QR code and a text payload for
    /// `fybrk pair-with` on the other device, then waits until it joins.
    Pair {
        /// How long the invitation is valid: 600, 90s, 10m, 1h.
        #[arg(long, default_value = "10m", value_parser = pairing::parse_duration)]
        expires: Duration,
        /// Where to save the QR code as PNG (default: ./fybrk-pair-<unix time>.png).
        #[arg(long, value_name = "PATH")]
        png: Option<PathBuf>,
        /// Return right after showing the invitation.
        #[arg(long)]
        no_wait: bool,
        /// Machine-readable output (one JSON line, and one more when a device joins).
        #[arg(long)]
        json: bool,
    },
    /// Join the folder of the device that showed this invitation (`fybrk pair` there).
    PairWith {
        /// The invitation text (starts with fybrk1:).
        payload: String,
    },
    /// List the paired devices.
    Peers {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run a rendezvous server: devices behind NATs register their addresses with it and ask it
    /// to introduce them to their paired devices (it never sees keys or data).
    Rendezvous {
        /// UDP address to serve on, e.g. 0.0.0.0:22101.
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:22101")]
        listen: std::net::SocketAddr,
    },
    /// Check the network like `tailscale netcheck`: whether UDP gets out, this device's public
    /// address as each STUN server sees it, and whether the NAT keeps one mapping (peers can
    /// punch through) or changes it per destination (a relay will be needed).
    NatCheck {
        /// STUN server to ask (repeat for more; also FYBRK_STUN or the config file's `stun`).
        /// Default: Google's public ones.
        #[arg(long, value_name = "HOST:PORT")]
        stun: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a paired device: it can no longer connect or receive changes.
    Unpair {
        /// Its id, a unique prefix of the id, or its name.
        id: String,
    },
    /// Re-read, decrypt and re-hash every chunk; check every record. Exits 2 on damage.
    Verify {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Free chunks that no file references any more.
    Gc,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.command);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cmd: &Cmd) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FYBRK_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            if matches!(cmd, Cmd::Mount { .. } | Cmd::Rendezvous { .. }) {
                "info"
            } else {
                "warn"
            },
        )
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    let state = StateDir::resolve(cli.state)?;
    match cli.command {
        Cmd::Mount {
            dir,
            foreground,
            name,
            net,
            notify_ready,
        } => {
            let mnt = mounts::absolute(&dir)?;
            if foreground {
                daemon::run(
                    &state,
                    cli.config.as_deref(),
                    &mnt,
                    name.as_deref(),
                    &net,
                    notify_ready,
                )?;
            } else {
                daemon::spawn(&state, cli.config.as_deref(), &mnt, name.as_deref(), &net)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Pair {
            expires,
            png,
            no_wait,
            json,
        } => pairing::pair(&state, expires, png, no_wait, json),
        Cmd::PairWith { payload } => pairing::pair_with(&state, &payload),
        Cmd::Peers { json } => pairing::peers(&state, json),
        Cmd::Unpair { id } => pairing::unpair(&state, &id),
        Cmd::Rendezvous { listen } => rendezvous(listen),
        Cmd::NatCheck { stun, json } => {
            // The same STUN servers as the daemon: --stun, else FYBRK_STUN, else the config file.
            let file = config::Config::load(cli.config.as_deref(), &state)?;
            let stun_env = std::env::var(fybrk_net::stun::STUN_ENV).ok();
            let flags = daemon::NetArgs {
                stun,
                ..daemon::NetArgs::default()
            };
            let (net, _) = file.apply(&flags, None, stun_env.as_deref());
            nat_check(&net.stun, json)
        }
        Cmd::Unmount { dir } => {
            unmount(&state, &mounts::absolute(&dir)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json, watch } => {
            if watch {
                return pairing::watch_status(&state);
            }
            let s = control::call(
                &state.socket(),
                &Request::Status,
                Some(Duration::from_secs(10)),
            )?;
            if json {
                println!("{s}");
            } else {
                print_status(&s);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Verify { json } => {
            let report = match control::call(&state.socket(), &Request::Verify, None) {
                Ok(v) => v,
                Err(_) if !state.socket().exists() => {
                    with_offline_store(&state, |s| Ok(serde_json::to_value(s.verify()?)?))?
                }
                Err(e) => return Err(e),
            };
            let problems: Vec<&str> = report["problems"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if json {
                println!("{report}");
            } else {
                for p in &problems {
                    println!("damaged: {p}");
                }
                println!(
                    "checked {} chunks and {} records: {}",
                    report["chunks_checked"],
                    report["records_checked"],
                    if problems.is_empty() {
                        "all intact".to_string()
                    } else {
                        format!("{} problems", problems.len())
                    }
                );
            }
            Ok(if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Cmd::Gc => {
            let r = match control::call(&state.socket(), &Request::Gc, None) {
                Ok(v) => v,
                Err(_) if !state.socket().exists() => {
                    with_offline_store(&state, |s| Ok(serde_json::to_value(s.gc()?)?))?
                }
                Err(e) => return Err(e),
            };
            println!(
                "freed {} chunks ({} bytes)",
                r["freed_chunks"], r["freed_bytes"]
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `fybrk nat-check`.
fn nat_check(stun: &[String], json_out: bool) -> Result<ExitCode> {
    use fybrk_net::stun::Mapping;
    let servers = fybrk_net::stun::stun_servers(stun).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = rt.block_on(async {
        let mux = fybrk_net::mux::MuxSocket::bind("0.0.0.0:0".parse()?)?;
        let local = mux.local_addr()?;
        Ok::<_, anyhow::Error>((local, fybrk_net::stun::nat_check(&mux, &servers).await))
    })?;
    let (local, r) = report;
    let mapping = match r.mapping {
        Mapping::EndpointIndependent => "endpoint-independent",
        Mapping::EndpointDependent => "endpoint-dependent (symmetric)",
        Mapping::Unknown => "unknown",
    };
    if json_out {
        let servers: Vec<serde_json::Value> = r
            .reflexive
            .iter()
            .map(|(s, a)| serde_json::json!({ "server": s, "reflexive": a }))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "local_addr": local,
                "udp_works": r.udp_works,
                "public_addr": r.public_addr(),
                "mapping": mapping,
                "servers": servers,
                "errors": r.errors.iter().map(|(s, e)| serde_json::json!({ "server": s, "error": e })).collect::<Vec<_>>(),
            })
        );
    } else {
        println!("local socket   {local}");
        println!(
            "UDP            {}",
            if r.udp_works {
                "works"
            } else {
                "BLOCKED: no STUN server answered"
            }
        );
        for (server, addr) in &r.reflexive {
            match addr {
                Some(a) => println!("  {server:<28} sees us at {a}"),
                None => {
                    let why = r
                        .errors
                        .iter()
                        .find(|(s, _)| s == server)
                        .map(|(_, e)| e.as_str());
                    println!("  {server:<28} {}", why.unwrap_or("no answer"));
                }
            }
        }
        println!(
            "public address {}",
            r.public_addr().map_or("unknown".into(), |a| a.to_string())
        );
        println!("NAT mapping    {mapping}");
        println!(
            "verdict        {}",
            match (r.udp_works, r.mapping) {
                (false, _) => "no UDP: peers can only be reached through a TURN relay (--turn)",
                (true, Mapping::EndpointIndependent) =>
                    "direct connections through hole punching should work",
                (true, Mapping::EndpointDependent) =>
                    "hole punching will mostly fail; expect a relay with peers behind NAT",
                (true, Mapping::Unknown) => "ask at least two STUN servers to know the NAT type",
            }
        );
    }
    Ok(if r.udp_works {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// `fybrk rendezvous`: serves until SIGINT/SIGTERM.
fn rendezvous(listen: std::net::SocketAddr) -> Result<ExitCode> {
    let socket = std::net::UdpSocket::bind(listen).with_context(|| {
        format!("cannot listen on UDP {listen} (in use? pass another --listen)")
    })?;
    let addr = socket.local_addr()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    println!("fybrk rendezvous: serving on UDP {addr}");
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        fybrk_net::rendezvous::run_server_with(socket, Default::default(), stop).await
    })
    .context("the rendezvous server failed")?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the store directly when no daemon runs (taking the state lock, so none can start).
fn with_offline_store(state: &StateDir, f: impl FnOnce(&Store) -> Result<Value>) -> Result<Value> {
    let _lock = state.lock()?;
    let key = state.existing_key()?;
    let store = Store::open(&state.db(&key), &key, StoreOptions::default())
        .with_context(|| format!("cannot open the store in {}", state.db(&key).display()))?;
    f(&store)
}

fn unmount(state: &StateDir, mnt: &Path) -> Result<()> {
    match control::call(
        &state.socket(),
        &Request::Status,
        Some(Duration::from_secs(10)),
    ) {
        Ok(s) => {
            let served = s["mount_point"].as_str().unwrap_or_default();
            if Path::new(served) != mnt {
                bail!(
                    "the daemon of state dir {} serves {served}, not {}",
                    state.root.display(),
                    mnt.display()
                );
            }
            let pid = s["pid"].as_u64().unwrap_or(0) as i32;
            // The reply may be cut short when the daemon exits quickly; what counts is below.
            let _ = control::call(
                &state.socket(),
                &Request::Unmount,
                Some(Duration::from_secs(10)),
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let alive = pid > 0
                    && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
                if !alive && mounts::mount_at(mnt).is_none() {
                    println!("fybrk: unmounted {}", mnt.display());
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            bail!(
                "the daemon (pid {pid}) did not stop within 60 s; see {}",
                state.log().display()
            )
        }
        Err(_) => match mounts::mount_at(mnt) {
            Some(m) if m.is_fybrk() => {
                mounts::lazy_unmount(mnt)?;
                println!(
                    "fybrk: removed a stale mount at {} (its daemon was gone)",
                    mnt.display()
                );
                Ok(())
            }
            _ => bail!(
                "{} is not mounted by fybrk (state dir {})",
                mnt.display(),
                state.root.display()
            ),
        },
    }
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) fn print_status(s: &Value) {
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    println!(
        "device        {} ({})",
        s["device_name"].as_str().unwrap_or("?"),
        s["device_id"].as_str().unwrap_or("?")
    );
    println!("mount point   {}", s["mount_point"].as_str().unwrap_or("?"));
    println!("daemon pid    {}", n("pid"));
    println!(
        "files         {} (directories {}, symlinks {})",
        n("files"),
        n("dirs"),
        n("symlinks")
    );
    println!("logical size  {}", human_bytes(n("logical_bytes")));
    println!(
        "stored size   {} in {} chunks (encrypted, deduplicated)",
        human_bytes(n("stored_bytes")),
        n("chunks")
    );
    println!(
        "dedup ratio   {:.2}x",
        s["dedup_ratio"].as_f64().unwrap_or(1.0)
    );
    println!(
        "listening     {} (UDP)",
        s["listen_addr"].as_str().unwrap_or("?")
    );
    if let Some(r) = s["rendezvous"].as_str() {
        println!("rendezvous    {r}");
    }
    if let Some(c) = s["config_file"].as_str() {
        println!("config file   {c}");
    }
    let nat = &s["nat"];
    if !nat.is_null() {
        let public = nat["public_addr"].as_str().unwrap_or("unknown");
        match nat["udp_works"].as_bool() {
            Some(false) => println!("public        no answer from the STUN servers over UDP"),
            _ => println!(
                "public        {public} ({} mapping)",
                match nat["mapping"].as_str() {
                    Some("EndpointIndependent") => "endpoint-independent",
                    Some("EndpointDependent") => "symmetric NAT, endpoint-dependent",
                    _ => "unknown",
                }
            ),
        }
    }
    let relay = &s["relay"];
    if !relay.is_null() {
        let str_of = |k: &str| relay[k].as_str().unwrap_or("?");
        let how = match (relay["active"].as_bool(), relay["everything"].as_bool()) {
            (Some(false), _) => "lost, not relaying",
            (_, Some(true)) => {
                "all traffic goes through it: this network lets UDP out only to the TURN server"
            }
            _ => "used only for peers with no direct path",
        };
        println!(
            "relay         {} via {} ({how})",
            str_of("relayed_addr"),
            str_of("server")
        );
    }
    pairing::print_peers_status(s);
}
