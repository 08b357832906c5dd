//! nexcage: an OCI runtime with runc's command line that routes each container to a
//! backend (crun, runc, LXC, Proxmox VE containers and VMs) and keeps a record of where
//! it went.

pub mod backend;
pub mod bundle;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod ids;
pub mod logging;
pub mod output;
pub mod process;
pub mod routing;
pub mod signal;
pub mod spec_check;
pub mod state;
pub mod supervise;

use std::ffi::OsString;

use clap::FromArgMatches;

/// Runs one command line; returns the process exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let mut command = cli::command_for(&args);
    let args = cli::argv::normalize(&command, args);
    let matches = match command.try_get_matches_from_mut(args.clone()) {
        Ok(m) => m,
        Err(e) if !e.use_stderr() => {
            // --help, --version: clap's own text on stdout.
            let _ = e.print();
            return 0;
        }
        Err(e) => return usage_error(&args, &e),
    };
    let parsed = match cli::Cli::from_arg_matches(&matches) {
        Ok(p) => p,
        Err(e) => return usage_error(&args, &e),
    };
    let mut reporter = logging::Reporter::init(&parsed.global);
    if parsed.global.version {
        print_version();
        return 0;
    }
    let Some(cmd) = parsed.command.as_ref() else {
        let _ = command.print_help();
        return 0;
    };
    let flags = match matches.subcommand() {
        Some((name, sub_matches)) => command
            .find_subcommand(name)
            .map(|sub| cli::passthrough::flags(sub, sub_matches, &["bundle"]))
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let code = match commands::dispatch(&parsed.global, cmd, flags) {
        Ok(code) => code,
        Err(e) => {
            reporter.error(&e.to_string());
            1
        }
    };
    // The process exits next: freeing clap's tables would cost more than the parsing.
    std::mem::forget((command, matches, parsed));
    code
}

/// A command line clap cannot take: one line, like every other error, on stderr and
/// in the `--log` file (which the engine reads), and runc's exit status for it.
fn usage_error(args: &[OsString], e: &clap::Error) -> i32 {
    let text = e.render().to_string();
    let message = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    logging::Reporter::from_raw_args(args).error(message);
    2
}

fn print_version() {
    println!("nexcage version {}", env!("CARGO_PKG_VERSION"));
    println!("spec: {}", oci_spec::runtime::VERSION);
}
