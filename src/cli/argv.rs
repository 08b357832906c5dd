//! Rewrites Go-style command lines (urfave/cli, Go's flag package) into clap's syntax
//! before parsing, using clap's own argument table so nothing is listed twice:
//! * single-dash long flags: `-bundle x`, `-no-subreaper` (go-runc emits these);
//! * boolean flags with a value: `--detach=false` (dropped), `--detach=true`;
//! * `exec`, `kill` and `ps` stop parsing flags after the container id, as runc does,
//!   so `exec ID sh -c x` or `kill ID -9` reach the command untouched.

use std::ffi::OsString;

use clap::{Arg, ArgAction, Command};

/// Subcommands whose arguments after the id belong to the container, not to us.
const STOP_AFTER_ID: &[&str] = &["exec", "kill", "ps"];

pub fn normalize(root: &Command, args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len() + 1);
    let mut iter = args.into_iter();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    let mut sub: Option<&Command> = None;
    while let Some(token) = iter.next() {
        let Some(text) = token.to_str().map(str::to_owned) else {
            out.push(token);
            continue;
        };
        let text = text.as_str();
        if text == "--" {
            out.push(token);
            out.extend(iter);
            break;
        }
        if let Some(flag) = text.strip_prefix('-').filter(|t| !t.is_empty()) {
            // "--name[=v]", or a Go-style "-name[=v]" when "name" is a known long flag.
            let long = match flag.strip_prefix('-') {
                Some(long) => Some(long),
                None if flag.len() > 1 => {
                    let name = flag.split('=').next().unwrap_or(flag);
                    find_long(root, sub, name).map(|_| flag)
                }
                None => None,
            };
            match long {
                Some(long) => {
                    let (name, value) = match long.split_once('=') {
                        Some((n, v)) => (n, Some(v)),
                        None => (long, None),
                    };
                    let arg = find_long(root, sub, name);
                    match (arg, value) {
                        (Some(a), Some(v)) if is_bool(a) => match v {
                            "true" | "1" => out.push(format!("--{name}").into()),
                            "false" | "0" => {}
                            _ => out.push(format!("--{long}").into()),
                        },
                        (Some(a), None) if a.get_action().takes_values() => {
                            out.push(format!("--{long}").into());
                            out.extend(iter.next());
                        }
                        _ => out.push(format!("--{long}").into()),
                    }
                }
                None => {
                    // Short flag, e.g. "-b DIR".
                    let takes_value = flag.chars().next().is_some_and(|c| {
                        find_short(root, sub, c).is_some_and(|a| a.get_action().takes_values())
                    });
                    out.push(token);
                    if takes_value && flag.len() == 1 {
                        out.extend(iter.next());
                    }
                }
            }
            continue;
        }
        match sub {
            None => {
                sub = root.find_subcommand(text);
                out.push(token);
            }
            Some(cmd) if STOP_AFTER_ID.contains(&cmd.get_name()) => {
                out.push(token);
                out.push("--".into());
                out.extend(iter);
                break;
            }
            Some(_) => out.push(token),
        }
    }
    out
}

fn is_bool(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

fn candidates<'a>(root: &'a Command, sub: Option<&'a Command>) -> impl Iterator<Item = &'a Arg> {
    sub.into_iter().flat_map(|s| s.get_arguments()).chain(
        root.get_arguments()
            .filter(move |a| a.is_global_set() || sub.is_none()),
    )
}

fn find_long<'a>(root: &'a Command, sub: Option<&'a Command>, name: &str) -> Option<&'a Arg> {
    candidates(root, sub).find(|a| a.get_long().is_some_and(|l| l == name))
}

fn find_short<'a>(root: &'a Command, sub: Option<&'a Command>, c: char) -> Option<&'a Arg> {
    candidates(root, sub).find(|a| a.get_short() == Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn norm(args: &[&str]) -> Vec<String> {
        let args = args.iter().map(OsString::from).collect();
        normalize(&crate::cli::Cli::command(), args)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn go_style_flags() {
        assert_eq!(
            norm(&[
                "n",
                "-root",
                "/r",
                "run",
                "-bundle",
                "/b",
                "-no-subreaper",
                "x"
            ]),
            [
                "n",
                "--root",
                "/r",
                "run",
                "--bundle",
                "/b",
                "--no-subreaper",
                "x"
            ]
        );
        assert_eq!(
            norm(&["n", "run", "--detach=false", "--keep=true", "-b", "/b", "x"]),
            ["n", "run", "--keep", "-b", "/b", "x"]
        );
        assert_eq!(
            norm(&["n", "--log=/l", "state", "x"]),
            ["n", "--log=/l", "state", "x"]
        );
    }

    #[test]
    fn stops_after_id() {
        assert_eq!(
            norm(&["n", "exec", "-e", "A=1", "--tty", "c", "ls", "-l", "--all"]),
            [
                "n", "exec", "-e", "A=1", "--tty", "c", "--", "ls", "-l", "--all"
            ]
        );
        assert_eq!(
            norm(&["n", "kill", "c", "-9"]),
            ["n", "kill", "c", "--", "-9"]
        );
        assert_eq!(
            norm(&["n", "ps", "--format", "json", "c", "-ef"]),
            ["n", "ps", "--format", "json", "c", "--", "-ef"]
        );
        // Flags after the id are still flags for the other commands (urfave/cli v1 order).
        assert_eq!(
            norm(&["n", "create", "c", "-bundle", "/b"]),
            ["n", "create", "c", "--bundle", "/b"]
        );
    }
}
