//! Signal names as runc accepts them: `9`, `KILL`, `SIGKILL`, `sigkill`.

use std::str::FromStr;

use nix::sys::signal::Signal;

use crate::error::{Error, Result};

/// Highest real-time signal on Linux.
const SIGRTMAX: i32 = 64;

pub fn parse(text: &str) -> Result<i32> {
    let unknown = || Error::Usage(format!("unknown signal {text:?}"));
    if let Ok(n) = text.parse::<i32>() {
        return if (1..=SIGRTMAX).contains(&n) {
            Ok(n)
        } else {
            Err(unknown())
        };
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name)
        .map(|s| s as i32)
        .map_err(|_| unknown())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn runc_spellings() {
        for s in ["9", "KILL", "SIGKILL", "sigkill", "kill"] {
            assert_eq!(parse(s).unwrap(), 9, "{s}");
        }
        assert_eq!(parse("TERM").unwrap(), 15);
        assert_eq!(parse("34").unwrap(), 34);
        for s in ["0", "65", "FOO", "", "-9"] {
            assert!(parse(s).is_err(), "{s}");
        }
    }
}
