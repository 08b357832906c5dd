//! runc-style logging: `--log FILE` gets one line per record, logrus-shaped JSON
//! (`{"level","msg","time"}`) with `--log-format json`, `time=.. level=.. msg=..`
//! otherwise. Errors are also printed plainly on stderr, as runc's `fatal()` does;
//! containerd reads the last error line of the file, podman parses it as one object,
//! so each failure writes exactly one error line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use crate::cli::{GlobalOpts, LogFormat};

pub struct Reporter {
    file: Option<File>,
    format: LogFormat,
}

impl Reporter {
    /// Sets up the `log` crate's logger too: debug with `--debug`, else warnings.
    pub fn init(global: &GlobalOpts) -> Reporter {
        let file = global.log.as_deref().and_then(open_log);
        let format = global.log_format;
        let level = if global.debug {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Warn
        };
        let mut builder = env_logger::Builder::new();
        builder.filter_level(level).format(move |buf, record| {
            let line = render(
                format,
                &record.level().to_string(),
                &record.args().to_string(),
            );
            writeln!(buf, "{line}")
        });
        if let Some(f) = file.as_ref().and_then(|f| f.try_clone().ok()) {
            builder.target(env_logger::Target::Pipe(Box::new(f)));
        }
        let _ = builder.try_init();
        Reporter { file, format }
    }

    /// For errors before the command line is parsed: `--log` and `--log-format`
    /// picked out of the raw arguments (either `--opt V` or `--opt=V`).
    pub fn from_raw_args(args: &[std::ffi::OsString]) -> Reporter {
        let mut log = None;
        let mut format = LogFormat::Text;
        let mut it = args.iter().skip(1).filter_map(|a| a.to_str());
        while let Some(arg) = it.next() {
            if arg == "--" {
                break;
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (arg, None),
            };
            if name != "--log" && name != "--log-format" {
                continue;
            }
            let Some(value) = inline.or_else(|| it.next().map(str::to_string)) else {
                break;
            };
            if name == "--log" {
                log = Some(value);
            } else if value == "json" {
                format = LogFormat::Json;
            }
        }
        Reporter {
            file: log.as_deref().and_then(open_log),
            format,
        }
    }

    /// One plain line on stderr, one structured line in the log file.
    pub fn error(&mut self, message: &str) {
        eprintln!("nexcage: {message}");
        if let Some(f) = self.file.as_mut() {
            let _ = writeln!(f, "{}", render(self.format, "error", message));
        }
    }
}

/// `[file:]PATH`; crun's `journald:`/`syslog:` targets are left to the backend.
fn open_log(spec: &str) -> Option<File> {
    if spec.is_empty() || spec.starts_with("journald:") || spec.starts_with("syslog:") {
        return None;
    }
    let path = spec.strip_prefix("file:").unwrap_or(spec);
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .ok()
}

fn render(format: LogFormat, level: &str, message: &str) -> String {
    let level = level.to_ascii_lowercase();
    let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    match format {
        LogFormat::Json => {
            serde_json::json!({"level": level, "msg": message, "time": time}).to_string()
        }
        LogFormat::Text => format!(
            "time={time:?} level={level} msg={}",
            serde_json::Value::from(message)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_is_one_logrus_object() {
        let line = render(LogFormat::Json, "ERROR", "container \"x\" does not exist");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container \"x\" does not exist");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!(!line.contains('\n'));
    }
}
