//! Re-emits the flags a caller gave to a subcommand, in canonical `--name value` form,
//! for a delegate runtime. Built from clap's table and matches, so every flag nexcage
//! accepts is passed on without a hand-kept list per command.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// Flags given on the command line to `sub`, except globals, positionals and `skip`.
pub fn flags(sub: &Command, matches: &ArgMatches, skip: &[&str]) -> Vec<OsString> {
    let mut out = Vec::new();
    for arg in sub.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if arg.is_global_set()
            || skip.contains(&id)
            || matches.value_source(id) != Some(ValueSource::CommandLine)
        {
            continue;
        }
        match arg.get_action() {
            ArgAction::SetTrue => {
                if matches.get_flag(id) {
                    out.push(format!("--{long}").into());
                }
            }
            _ => {
                for value in matches.get_raw(id).into_iter().flatten() {
                    out.push(format!("--{long}").into());
                    out.push(value.to_os_string());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn exec_flags_round_trip() {
        let root = crate::cli::Cli::command();
        let m = root
            .clone()
            .try_get_matches_from([
                "n", "--root", "/r", "exec", "-e", "A=1", "--env", "B=2", "-t", "--cwd", "/w", "c",
                "--", "sh",
            ])
            .unwrap();
        let (name, sub_m) = m.subcommand().unwrap();
        let sub = root.find_subcommand(name).unwrap();
        let got: Vec<_> = flags(sub, sub_m, &[])
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(
            got,
            ["--cwd", "/w", "--env", "A=1", "--env", "B=2", "--tty"]
        );
    }
}
