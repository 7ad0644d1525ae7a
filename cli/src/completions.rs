//! `fybrk completions SHELL` and `fybrk man`: generated from the clap definitions in `main.rs`,
//! so they list exactly the commands and flags the binary accepts.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::CommandFactory;
use roff::{bold, italic, roman, Roff};

/// Prints the completion script for `shell` (`source <(fybrk completions bash)`).
pub fn print_completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(shell, &mut cmd, "fybrk", &mut std::io::stdout().lock());
    Ok(ExitCode::SUCCESS)
}

/// Prints the manual page in roff: clap_mangen's page for the top level (name, synopsis,
/// description, global options), then a COMMANDS section with every subcommand's synopsis,
/// description and options. One page rather than clap_mangen's page per subcommand, so
/// `man fybrk` alone is the whole reference.
pub fn print_man() -> Result<ExitCode> {
    let mut cmd = crate::Cli::command().name("fybrk").bin_name("fybrk");
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .title("FYBRK")
        .section("1");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        command_section(&mut roff, sub);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (var, what) in [
        ("FYBRK_STATE", "the state directory, as --state"),
        ("FYBRK_CONFIG", "the config file, as --config"),
        (
            "FYBRK_LOG",
            "the log filter (info, debug, fybrk_net=trace, ...)",
        ),
    ] {
        roff.control("TP", []).text([bold(var)]).text([roman(what)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        roman("The README of the fybrk sources; "),
        bold("fybrk service status"),
        roman("."),
    ]);
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    std::io::stdout().lock().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// One subcommand: a subsection with its usage line, its help and its own options; nested
/// subcommands (`service install`) follow as their own subsections.
fn command_section(roff: &mut Roff, cmd: &clap::Command) {
    if cmd.has_subcommands() {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            command_section(roff, sub);
        }
        return;
    }
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage).to_string();
    roff.control("SS", [cmd.get_bin_name().unwrap_or(cmd.get_name())]);
    roff.text([bold(usage)]);
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        roff.control("PP", []).text([roman(about.to_string())]);
    }
    // Global options (--state, --config) and --help are described once, at the top.
    let args = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_global_set() && a.get_id() != "help");
    for arg in args {
        let name = match (arg.get_long(), arg.get_short()) {
            (Some(l), Some(s)) => format!("-{s}, --{l}"),
            (Some(l), None) => format!("--{l}"),
            (None, Some(s)) => format!("-{s}"),
            (None, None) => String::new(),
        };
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
        roff.control("TP", []);
        if arg.is_positional() {
            roff.text([italic(value)]);
        } else if arg.get_action().takes_values() {
            roff.text([bold(name), roman(" "), italic(value)]);
        } else {
            roff.text([bold(name)]);
        }
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string());
        roff.text([roman(help.unwrap_or_default())]);
    }
}
