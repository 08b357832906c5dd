//! `completion SHELL`: the shell's completion script for nexcage, from the clap
//! definitions, on stdout. Needs no root, config or backend, like `--version`.

use std::io::Write;

use clap_complete::Shell as Generator;

use crate::backend::Exit;
use crate::cli::{Shell, public_command};
use crate::error::{IoContext, Result};

pub fn completion(shell: Shell) -> Result<Exit> {
    let mut out = Vec::new();
    write_script(shell, &mut out);
    std::io::stdout()
        .lock()
        .write_all(&out)
        .context(|| "write completion script")?;
    Ok(0)
}

/// The script, rendered whole first: clap_complete panics on a failed write, and a
/// closed stdout must be an error, not a panic.
fn write_script(shell: Shell, out: &mut Vec<u8>) {
    let generator = match shell {
        Shell::Bash => Generator::Bash,
        Shell::Zsh => Generator::Zsh,
        Shell::Fish => Generator::Fish,
    };
    clap_complete::generate(generator, &mut public_command(), "nexcage", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: Shell) -> String {
        let mut out = Vec::new();
        write_script(shell, &mut out);
        String::from_utf8(out).expect("UTF-8 script")
    }

    /// Each script completes the subcommands callers type, and none of the internal ones.
    #[test]
    fn scripts_name_public_subcommands_only() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = script(shell);
            for public in ["create", "delete", "route", "completion"] {
                assert!(text.contains(public), "{shell:?} lacks {public}");
            }
            for internal in ["guest-init", "vm-holder", "holder"] {
                assert!(!text.contains(internal), "{shell:?} offers {internal}");
            }
        }
        assert!(script(Shell::Bash).contains("complete -F _nexcage"));
        assert!(script(Shell::Zsh).starts_with("#compdef nexcage"));
        assert!(script(Shell::Fish).contains("complete -c nexcage"));
    }
}
