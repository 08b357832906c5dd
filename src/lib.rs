//! nexcage: an OCI runtime with runc's command line that routes each container to a
//! backend (crun, runc; later Proxmox LXC) and keeps a record of where it went.

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
pub mod state;
pub mod supervise;

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches};

/// Runs one command line; returns the process exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let mut command = cli::Cli::command();
    let args = cli::argv::normalize(&command, args);
    let matches = match command.try_get_matches_from_mut(args) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let parsed = match cli::Cli::from_arg_matches(&matches) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.print();
            return 2;
        }
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

fn print_version() {
    println!("nexcage version {}", env!("CARGO_PKG_VERSION"));
    println!("spec: {}", oci_spec::runtime::VERSION);
}
