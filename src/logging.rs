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
        let logger = Logger {
            level,
            format,
            file: file.as_ref().and_then(|f| f.try_clone().ok()),
        };
        if log::set_boxed_logger(Box::new(logger)).is_ok() {
            log::set_max_level(level);
        }
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

/// The `log` crate's records, one line each in the `--log` format, to the log file or
/// else stderr. (Written here rather than with env_logger: nothing of it but the
/// level and the target was used, and it was code to page in on every command.)
struct Logger {
    level: log::LevelFilter,
    format: LogFormat,
    file: Option<File>,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = render(
            self.format,
            record.level().as_str(),
            &record.args().to_string(),
        );
        line.push('\n');
        // One write per line, so lines of concurrent writers do not interleave.
        let _ = match &self.file {
            Some(f) => (&*f).write_all(line.as_bytes()),
            None => std::io::stderr().write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {}
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
