//! `fybrk`: the command line and the daemon.

mod args;
mod completions;
mod config;
mod control;
mod daemon;
mod history;
mod human;
mod massdel;
mod mounts;
mod node;
mod ondemand;
mod operations;
mod pairing;
mod peers;
mod progress;
mod service;
mod state;
mod storage_cmd;
mod web;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use fybrk_control::{Client, NatCheckReport, StunAnswer, StunFailure};
use fybrk_store::{Store, StoreOptions};

use crate::args::{MountArgs, NetArgs};
use crate::config::MountOptions;
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
        #[command(flatten)]
        args: MountArgs,
        /// Internal: report readiness on stdout (used when daemonizing).
        #[arg(long, hide = true)]
        notify_ready: bool,
        /// Machine-readable output once mounted: `mount_point`, `pid`, `state_dir`.
        #[arg(long, conflicts_with = "foreground")]
        json: bool,
    },
    /// Unmount DIR and stop its daemon.
    Unmount {
        /// The mount point.
        dir: PathBuf,
        /// Machine-readable output once unmounted: `mount_point`, `pid` (0: a stale mount).
        #[arg(long)]
        json: bool,
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
    /// `fybrk pair-with` on the other device, then waits for it. When it asks, both screens
    /// show the same five words: compare them, then allow it (nothing is shared before).
    Pair {
        /// How long the invitation is valid: 600, 90s, 10m, 1h.
        #[arg(long, default_value = "10m", value_parser = pairing::parse_duration)]
        expires: Duration,
        /// Where to save the QR code as PNG, readable by you only; deleted when the
        /// invitation ends (default: ./fybrk-pair-<unix time>.png).
        #[arg(long, value_name = "PATH")]
        png: Option<PathBuf>,
        /// Return right after showing the invitation; requests then wait for `fybrk approve`
        /// or `fybrk deny` (listed by `fybrk status`).
        #[arg(long)]
        no_wait: bool,
        /// Let the first device with a valid invitation in without asking: whoever holds the
        /// invitation gets the folder. For scripts that pass it over a trusted channel.
        #[arg(long)]
        yes: bool,
        /// How long a request waits for approval: 90s, 2m.
        #[arg(long, default_value = "2m", value_parser = pairing::parse_duration)]
        approve_within: Duration,
        /// End every open invitation of this device (a waiting device is told).
        #[arg(long, conflicts_with_all = ["no_wait", "yes", "png"])]
        cancel: bool,
        /// Machine-readable output: the invitation, each request, and the outcome, one JSON
        /// line each.
        #[arg(long)]
        json: bool,
    },
    /// Allow a device that asks to join (after comparing the words both screens show).
    Approve {
        /// Its id, a unique prefix of the id, or its name (`fybrk status` lists requests).
        id: String,
        /// Machine-readable output: the device (`id`, `name`).
        #[arg(long)]
        json: bool,
    },
    /// Refuse a device that asks to join; the invitation it used ends.
    Deny {
        /// Its id, a unique prefix of the id, or its name.
        id: String,
        /// Machine-readable output: the device (`id`, `name`).
        #[arg(long)]
        json: bool,
    },
    /// Join the folder of the device that showed this invitation (`fybrk pair` there).
    PairWith {
        /// The invitation text (starts with fybrk1:), or `-` to read it from standard input
        /// (keeps the secret off the command line).
        #[arg(required_unless_present = "qr")]
        payload: Option<String>,
        /// Read the invitation from a picture of its QR code (PNG or JPEG, e.g. a photo).
        #[arg(long, value_name = "FILE", conflicts_with = "payload")]
        qr: Option<PathBuf>,
        /// Share this folder's existing files with the other folder without asking.
        #[arg(long)]
        yes: bool,
        /// Machine-readable output: each answer as a JSON line (`waiting`, then `joined`).
        #[arg(long)]
        json: bool,
    },
    /// List the paired devices.
    Peers {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Ping a paired device over its link, like `tailscale ping`: the round trip and the path
    /// (`lan`, `direct`, `relay via HOST`) per attempt, one a second. Exits 0 once a direct
    /// path answered (with --no-until-direct: once any link answered), else 1.
    Ping {
        /// The device: its name, its id, or a unique prefix of its id.
        device: String,
        /// At most this many attempts.
        #[arg(long, short = 'c', value_name = "N", default_value_t = 10)]
        count: u32,
        /// Stop at the first direct answer (`lan` or `direct`); the default.
        #[arg(long, overrides_with = "no_until_direct")]
        until_direct: bool,
        /// Make all `--count` attempts, whatever the path.
        #[arg(long, overrides_with = "until_direct")]
        no_until_direct: bool,
        /// One JSON object per attempt, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Run a rendezvous server: devices behind NATs register their addresses with it and ask it
    /// to introduce them to their paired devices (it never sees keys or data).
    Rendezvous {
        /// UDP address to serve on. Default [::]:22101, IPv6 and IPv4 on one socket (0.0.0.0
        /// where the host has no IPv6); 0.0.0.0:22101 for IPv4 only.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Run Mainline DHT nodes in server mode (the lab's own little DHT for the tests; not for
    /// users: the public DHT needs no help).
    #[command(hide = true)]
    DhtNode {
        /// IPv4 address and port of a node (repeat for more nodes in this process); the first
        /// is every other one's bootstrap node.
        #[arg(long, value_name = "ADDR", required = true)]
        listen: Vec<std::net::SocketAddrV4>,
        /// Bootstrap node of the first (default: none, a new DHT).
        #[arg(long, value_name = "HOST:PORT")]
        bootstrap: Vec<String>,
    },
    /// Check the network like `tailscale netcheck`: whether UDP gets out, this device's public
    /// address as each STUN server sees it, and whether the NAT keeps one mapping (peers can
    /// punch through) or changes it per destination (a relay will be needed), and which port
    /// mapping protocol the router answers (PCP, NAT-PMP, UPnP; the test mapping is deleted
    /// at once).
    NatCheck {
        /// STUN server to ask (repeat for more; also FYBRK_STUN or the config file's `stun`).
        /// Default: Google's public ones.
        #[arg(long, value_name = "HOST:PORT")]
        stun: Vec<String>,
        /// Do not ask the router for a port mapping (also the config file's
        /// `port_mapping = false`).
        #[arg(long)]
        no_port_mapping: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The folder's members: who added each, online or last seen.
    Members {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a device from the folder: every member refuses it from then on, also members
    /// that are offline now (they learn it when they reconnect).
    Remove {
        /// Its id, a unique prefix of the id, or its name.
        id: String,
        /// Machine-readable output: the device (`id`, `name`).
        #[arg(long)]
        json: bool,
    },
    /// The same as `remove` (the old name).
    Unpair {
        /// Its id, a unique prefix of the id, or its name.
        id: String,
        /// Machine-readable output: the device (`id`, `name`).
        #[arg(long)]
        json: bool,
    },
    /// Re-read, decrypt and re-hash every chunk; check every record. Exits 2 on damage.
    Verify {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Apply history's retention ([history] in config.toml), then free chunks that nothing
    /// references any more.
    Gc {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The kept versions of a file, or of everything under a directory, newest first: time,
    /// device, size, what happened.
    Log {
        /// A path in the mounted folder (absolute, or relative to the current directory); it
        /// may be deleted.
        path: PathBuf,
        /// Show at most this many versions.
        #[arg(long, short = 'n', value_name = "N")]
        limit: Option<u64>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Keep files on this device whatever its cache needs (an on-demand device), and fetch
    /// what they lack now.
    Pin {
        /// Files or directories in the mounted folder (absolute, or relative to the current
        /// directory); `/` is the whole folder.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Stop keeping files on this device whatever its cache needs.
    Unpin {
        /// Files or directories as pinned.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Drop the local content of files now (an on-demand device), where another device keeps
    /// it; they stay visible and are fetched again when read.
    Free {
        /// Files or directories in the mounted folder.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List a directory (or one file) with where each file's content is: local, partial or
    /// remote, and whether it is pinned.
    Ls {
        /// A directory or file in the mounted folder (default: the current directory).
        path: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Bring a file or a directory tree back as it was, as a new version that syncs to every
    /// device (undo it with another restore). `fybrk restore / --at 1h` rolls the whole folder
    /// back.
    Restore {
        /// A path in the mounted folder (absolute, or relative to the current directory); it
        /// may be deleted.
        path: PathBuf,
        /// As it was at TIME: 2026-12-02T10:00:00Z, 2026-12-02 10:00 (local time), or 10m, 2h,
        /// 3d ago.
        #[arg(
            long,
            value_name = "TIME",
            required_unless_present = "version",
            conflicts_with = "version"
        )]
        at: Option<String>,
        /// This version (an id from `fybrk log`).
        #[arg(long, value_name = "ID")]
        version: Option<u64>,
        /// Restore to this path instead of in place (a copy; nothing is deleted).
        #[arg(long, value_name = "DEST")]
        to: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run the folder as a systemd user service: mounted at login, restarted if the daemon dies.
    Service {
        #[command(subcommand)]
        cmd: service::ServiceCmd,
    },
    /// Print a shell completion script: `source <(fybrk completions bash)`.
    Completions {
        /// bash, zsh, fish (also elvish, powershell).
        shell: clap_complete::Shell,
    },
    /// Print the manual page in roff: `fybrk man | man -l -`.
    Man,
    /// Print the local web page's URL (with its token) and open it in the browser: devices,
    /// sync progress, members, pairing, history with restore. Also serves /metrics.
    Web {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only print the URL; do not start a browser.
        #[arg(long)]
        no_open: bool,
    },
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
            if matches!(
                cmd,
                Cmd::Mount { .. } | Cmd::Rendezvous { .. } | Cmd::DhtNode { .. }
            ) {
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
            args,
            notify_ready,
            json,
        } => {
            let mnt = mounts::absolute(&dir)?;
            if foreground {
                // Resolved once, here; the daemon reports a bad file like any start-up error.
                let options = MountOptions::load(cli.config.as_deref(), &state, &args);
                daemon::run(&state, &mnt, options, notify_ready)?;
                return Ok(ExitCode::SUCCESS);
            }
            let pid = daemon::spawn(&state, cli.config.as_deref(), &mnt, &args)?;
            if json {
                let r = fybrk_control::MountReply {
                    mount_point: mnt,
                    pid,
                    state_dir: state.root.clone(),
                };
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "fybrk: mounted {} (daemon pid {pid}, state {})",
                    mnt.display(),
                    state.root.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Pair {
            cancel: true, json, ..
        } => pairing::cancel(&state, json),
        Cmd::Pair {
            expires,
            png,
            no_wait,
            yes,
            approve_within,
            json,
            ..
        } => pairing::pair(
            &state,
            pairing::PairOptions {
                expires,
                png,
                no_wait,
                yes,
                approve_within,
                json,
            },
        ),
        Cmd::Approve { id, json } => pairing::decide(&state, &id, true, json),
        Cmd::Deny { id, json } => pairing::decide(&state, &id, false, json),
        Cmd::PairWith {
            payload,
            qr,
            yes,
            json,
        } => pairing::pair_with(&state, payload.as_deref(), qr.as_deref(), yes, json),
        Cmd::Peers { json } => pairing::peers(&state, json),
        Cmd::Ping {
            device,
            count,
            until_direct: _,
            no_until_direct,
            json,
        } => ping(&state, &device, count, !no_until_direct, json),
        Cmd::Members { json } => pairing::members(&state, json),
        Cmd::Remove { id, json } | Cmd::Unpair { id, json } => pairing::remove(&state, &id, json),
        Cmd::Rendezvous { listen } => rendezvous(listen),
        Cmd::DhtNode { listen, bootstrap } => dht_node(&listen, bootstrap),
        Cmd::Service { cmd } => service::run(cmd, &state, cli.config.as_deref()),
        Cmd::Completions { shell } => completions::print_completions(shell),
        Cmd::Man => completions::print_man(),
        Cmd::Web { json, no_open } => web::cmd::run(&state, json, no_open),
        Cmd::NatCheck {
            stun,
            no_port_mapping,
            json,
        } => {
            // The same STUN servers as the daemon: --stun, else FYBRK_STUN, else the config file.
            let flags = MountArgs {
                net: NetArgs {
                    stun,
                    no_port_mapping,
                    ..NetArgs::default()
                },
                ..MountArgs::default()
            };
            let options = MountOptions::load(cli.config.as_deref(), &state, &flags)?;
            nat_check(
                &options.traversal.stun,
                options.traversal.port_mapping,
                json,
            )
        }
        Cmd::Unmount { dir, json } => {
            let mnt = mounts::absolute(&dir)?;
            let pid = unmount(&state, &mnt)?;
            if json {
                let r = fybrk_control::UnmountReply {
                    pid,
                    mount_point: mnt,
                };
                println!("{}", serde_json::to_string(&r)?);
            } else if pid == 0 {
                println!(
                    "fybrk: removed a stale mount at {} (its daemon was gone)",
                    mnt.display()
                );
            } else {
                println!("fybrk: unmounted {}", mnt.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json, watch } => {
            if watch {
                return pairing::watch_status(&state);
            }
            let s = Client::new(state.socket())
                .call(fybrk_control::Status, Some(Duration::from_secs(10)))?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                human::print_status(&s);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Verify { json } => {
            let called = progress::with_progress(&state, "verify", || {
                Client::new(state.socket()).call(fybrk_control::Verify, None)
            });
            let report = match called {
                Ok(v) => v,
                Err(_) if !state.socket().exists() => {
                    with_offline_store(&state, |s| Ok(control::verify_reply(s.verify()?)))?
                }
                Err(e) => return Err(e.into()),
            };
            let problems = &report.problems;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                for p in problems {
                    println!("damaged: {p}");
                }
                println!(
                    "checked {} chunks and {} records: {}",
                    report.chunks_checked,
                    report.records_checked,
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
        Cmd::Gc { json } => {
            let called = progress::with_progress(&state, "gc", || {
                Client::new(state.socket()).call(fybrk_control::Gc, None)
            });
            let r = match called {
                Ok(v) => v,
                Err(_) if !state.socket().exists() => {
                    let retention = config::Config::load(cli.config.as_deref(), &state)?.retention;
                    with_offline_store(&state, |s| history::collect(s, &retention))?
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                println!("{}", serde_json::to_string(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "dropped {} old versions; freed {} chunks ({}); history now takes {}",
                r.versions_dropped,
                r.freed_chunks,
                human::human_bytes(r.freed_bytes),
                human::human_bytes(r.history_bytes)
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Pin { paths, json } => storage_cmd::pin(&state, &paths, json),
        Cmd::Unpin { paths, json } => storage_cmd::unpin(&state, &paths, json),
        Cmd::Free { paths, json } => storage_cmd::free(&state, &paths, json),
        Cmd::Ls { path, json } => storage_cmd::ls(&state, path, json),
        Cmd::Log { path, limit, json } => {
            let client = Client::new(state.socket());
            let path = history::folder_path(&client, &path)?;
            let r = client.call(fybrk_control::Log { path, limit }, None)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                human::print_log(&r);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Restore {
            path,
            at,
            version,
            to,
            json,
        } => {
            let client = Client::new(state.socket());
            let path = history::folder_path(&client, &path)?;
            let to = to.map(|t| history::folder_path(&client, &t)).transpose()?;
            let at_ns = at
                .map(|t| fybrk_fs::when::parse_time(&t, fybrk_store::history::now_ns()))
                .transpose()
                .map_err(|e| anyhow::anyhow!(e))?;
            let req = fybrk_control::Restore {
                path,
                at_ns,
                version,
                to,
            };
            let r = progress::with_progress(&state, "restore", || {
                client.call(req, Some(Duration::from_secs(3600)))
            })?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else if r.restored + r.deleted == 0 {
                println!("nothing to do: it already is as it was then");
            } else {
                println!(
                    "restored {} paths ({}), removed {} that did not exist then",
                    r.restored,
                    human::human_bytes(r.bytes),
                    r.deleted
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `fybrk nat-check`.
fn nat_check(stun: &[String], port_mapping: bool, json_out: bool) -> Result<ExitCode> {
    use fybrk_net::stun::Mapping;
    let servers = fybrk_net::stun::stun_servers(stun).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = rt.block_on(async {
        // Dual stack, so the check covers IPv6 too; IPv4 alone where the host has no IPv6.
        let mux = match fybrk_net::mux::MuxSocket::bind(fybrk_net::mux::dual_stack(0)) {
            Err(fybrk_net::mux::MuxError::Bind { source, .. })
                if fybrk_net::mux::is_no_ipv6(&source) =>
            {
                fybrk_net::mux::MuxSocket::bind("0.0.0.0:0".parse()?)?
            }
            bound => bound?,
        };
        let local = mux.local_addr()?;
        // The router is asked to map the check's own port, beside the STUN questions.
        let gateway = port_mapping
            .then(fybrk_net::portmap::gateway::default_gateway)
            .flatten();
        let mapping = async {
            let config = fybrk_net::portmap::PortMapConfig {
                gateway: gateway?,
                internal_port: local.port(),
                protocols: node::port_mapping_protocols(),
            };
            fybrk_net::portmap::probe(config).await.ok().flatten()
        };
        let (stun, mapping) = tokio::join!(fybrk_net::stun::nat_check(&mux, &servers), mapping);
        Ok::<_, anyhow::Error>((local, stun, gateway, mapping))
    })?;
    let (local, r, gateway, mapping) = report;
    let report = NatCheckReport {
        local_addr: local,
        udp_works: r.udp_works,
        public_addr: r.public_addr(),
        mapping: match r.mapping {
            Mapping::EndpointIndependent => fybrk_control::Mapping::EndpointIndependent,
            Mapping::EndpointDependent => fybrk_control::Mapping::EndpointDependent,
            Mapping::Unknown => fybrk_control::Mapping::Unknown,
        },
        servers: r
            .reflexive
            .into_iter()
            .map(|(server, reflexive)| StunAnswer { server, reflexive })
            .collect(),
        errors: r
            .errors
            .into_iter()
            .map(|(server, error)| StunFailure { server, error })
            .collect(),
        ipv6: r.ipv6,
        gateway: gateway.map(std::net::IpAddr::V4),
        port_mapping: mapping.map(|m| fybrk_control::PortMappingStatus {
            protocol: m.protocol.name().to_string(),
            external_addr: std::net::SocketAddr::V4(m.external),
            lifetime_secs: m.lifetime.as_secs(),
        }),
    };
    if json_out {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        human::print_nat_check(&report);
    }
    Ok(if report.udp_works {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// `fybrk ping`: one `ping` request a second until `count` attempts, or (with `until_direct`)
/// until one answers over a direct path.
fn ping(
    state: &StateDir,
    device: &str,
    count: u32,
    until_direct: bool,
    json: bool,
) -> Result<ExitCode> {
    // Long enough for a dial of a few addresses when there is no link.
    const WAIT: Duration = Duration::from_secs(5);
    let client = Client::new(state.socket());
    let mut ok = false;
    for attempt in 0..count.max(1) {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        let req = fybrk_control::Ping {
            id: device.to_owned(),
            wait_ms: u64::try_from(WAIT.as_millis()).unwrap_or(u64::MAX),
        };
        let r = client.call(req, Some(WAIT + Duration::from_secs(5)))?;
        if json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!("{}", human::ping_line(&r));
        }
        ok = if until_direct {
            r.is_direct()
        } else {
            r.connected
        };
        if until_direct && ok {
            break;
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `fybrk rendezvous`: serves until SIGINT/SIGTERM.
fn rendezvous(listen: Option<std::net::SocketAddr>) -> Result<ExitCode> {
    use fybrk_net::mux::{bind_udp, dual_stack, is_no_ipv6};
    let (listen, bound) = match listen {
        Some(addr) => (addr, bind_udp(addr)),
        None => match bind_udp(dual_stack(22101)) {
            Err(e) if is_no_ipv6(&e) => {
                eprintln!("fybrk rendezvous: no IPv6 on this host, serving IPv4 only");
                let v4 = std::net::SocketAddr::from(([0, 0, 0, 0], 22101));
                (v4, bind_udp(v4))
            }
            bound => (dual_stack(22101), bound),
        },
    };
    let socket = bound.with_context(|| {
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

/// `fybrk dht-node`: server-mode DHT nodes at `listen` until SIGTERM or Ctrl-C.
fn dht_node(listen: &[std::net::SocketAddrV4], bootstrap: Vec<String>) -> Result<ExitCode> {
    use fybrk_net::dht::{DhtNode, NodeOptions};
    let mut nodes = Vec::new();
    let mut bootstrap = bootstrap;
    for addr in listen {
        let node = DhtNode::start(&NodeOptions {
            bootstrap: bootstrap.clone(),
            bind: Some(*addr),
            server: true,
            request_timeout: None,
        })
        .with_context(|| format!("cannot start a DHT node on UDP {addr}"))?;
        if nodes.is_empty() {
            bootstrap = vec![addr.to_string()];
        }
        nodes.push(node);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    println!("fybrk dht-node: serving on UDP {listen:?}");
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        drop(nodes);
        Ok::<(), std::io::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the store directly when no daemon runs (taking the state lock, so none can start).
fn with_offline_store<T>(state: &StateDir, f: impl FnOnce(&Store) -> Result<T>) -> Result<T> {
    let _lock = state.lock()?;
    let keys = state.existing_keys()?;
    let store = keys
        .open_store(&state.db(&keys), StoreOptions::default())
        .with_context(|| format!("cannot open the store in {}", state.db(&keys).display()))?;
    f(&store)
}

/// Unmounts `mnt` and waits for its daemon to exit; the daemon's pid, or 0 when only a stale
/// mount (its daemon gone) was removed.
fn unmount(state: &StateDir, mnt: &Path) -> Result<u32> {
    let daemon = Client::new(state.socket());
    match daemon.call(fybrk_control::Status, Some(Duration::from_secs(10))) {
        Ok(s) => {
            let served = &s.mount_point;
            if served != mnt {
                bail!(
                    "the daemon of state dir {} serves {}, not {}",
                    state.root.display(),
                    served.display(),
                    mnt.display()
                );
            }
            let pid = i32::try_from(s.pid).unwrap_or(0);
            // The reply may be cut short when the daemon exits quickly; what counts is below.
            let _ = daemon.call(fybrk_control::Unmount, Some(Duration::from_secs(10)));
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let alive = pid > 0
                    && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
                if !alive && mounts::mount_at(mnt).is_none() {
                    return Ok(s.pid);
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
                Ok(0)
            }
            _ => bail!(
                "{} is not mounted by fybrk (state dir {})",
                mnt.display(),
                state.root.display()
            ),
        },
    }
}
