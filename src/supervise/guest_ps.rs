//! `ps` of a container in a VM: its processes are the guest's (no host pid names
//! them), so guest-init lists them from its /proc and the host prints them as runc
//! prints `ps -ef` (UID PID PPID C STIME TTY TIME CMD), or their pids as JSON.

use std::fmt::Write;

/// One process of the guest's, as `ps -ef` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GuestProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    /// `pts/N`, or `?` without a terminal.
    pub tty: String,
    /// Seconds since the epoch (the guest's clock) it started at.
    pub started: u64,
    /// CPU time used, in seconds.
    pub cpu: u64,
    pub cmd: String,
}

/// A command line's share of the answer (procps cuts them too).
const MAX_CMD: usize = 4096;

/// In the guest: the answer to `Ps`, every process but guest-init and the kernel's
/// threads, as JSON that fits in one frame (the last ones left out if need be).
pub fn answer() -> Vec<u8> {
    let mut procs = list();
    loop {
        let json = serde_json::to_vec(&procs).unwrap_or_default();
        if json.len() <= super::frames::MAX_PAYLOAD || procs.is_empty() {
            return json;
        }
        procs.truncate(procs.len() / 2);
    }
}

fn list() -> Vec<GuestProcessInfo> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as u64;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let mut out: Vec<GuestProcessInfo> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid > 2)
        .filter_map(|pid| one(pid, ticks, boot))
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

fn one(pid: i32, ticks: u64, boot: u64) -> Option<GuestProcessInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything; the fields follow it.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n).and_then(|f| f.parse::<u64>().ok());
    // Fields after the name, from 0: state ppid pgrp session tty_nr ... utime(11)
    // stime(12) ... starttime(19).
    let ppid = field(1)? as i32;
    if ppid == 2 {
        return None;
    }
    let tty_nr = field(4)?;
    let cpu = (field(11)? + field(12)?) / ticks;
    let started = boot + field(19)? / ticks;
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut cmd = if cmdline.is_empty() {
        format!("[{comm}]")
    } else {
        String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .replace('\0', " ")
    };
    if cmd.len() > MAX_CMD {
        let mut end = MAX_CMD;
        while !cmd.is_char_boundary(end) {
            end -= 1;
        }
        cmd.truncate(end);
    }
    // Unix98 ptys are major 136-143; minor = low 8 bits + bits 20..31.
    let (major, minor) = (
        (tty_nr >> 8) & 0xfff,
        (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00),
    );
    let tty = if (136..=143).contains(&major) {
        format!("pts/{}", (major - 136) * 256 + minor)
    } else {
        "?".into()
    };
    Some(GuestProcessInfo {
        pid,
        ppid,
        uid,
        tty,
        started,
        cpu,
        cmd,
    })
}

/// Text from the guest as the host's terminal shows it: control characters (escape
/// sequences, newlines that would forge rows) as `?`, as procps prints them.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// On the host: the table `ps -ef` prints.
pub fn table(procs: &[GuestProcessInfo]) -> String {
    let mut out = String::from("UID          PID    PPID  C STIME TTY          TIME CMD\n");
    for p in procs {
        let pts = p
            .tty
            .strip_prefix("pts/")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let tty = if pts { p.tty.as_str() } else { "?" };
        let cmd = printable(&p.cmd);
        let secs = p.started % 86_400;
        let stime = format!("{:02}:{:02}", secs / 3600, secs / 60 % 60);
        let time = format!(
            "{:02}:{:02}:{:02}",
            p.cpu / 3600,
            p.cpu / 60 % 60,
            p.cpu % 60
        );
        let _ = writeln!(
            out,
            "{:<8} {:>7} {:>7}  0 {stime} {:<8} {time} {cmd}",
            p.uid, p.pid, p.ppid, tty
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_cannot_forge_rows_or_escape() {
        let t = table(&[GuestProcessInfo {
            pid: 7,
            ppid: 1,
            uid: 0,
            tty: "\x1b[2J".into(),
            started: 0,
            cpu: 0,
            cmd: "a\nroot 1 0 0 00:00 ? 00:00:00 fake\x1b]0;x\x07".into(),
        }]);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(!t.contains('\x1b') && !t.contains('\x07'), "{t:?}");
    }

    #[test]
    fn the_table_is_ps_ef() {
        let t = table(&[GuestProcessInfo {
            pid: 7,
            ppid: 1,
            uid: 0,
            tty: "?".into(),
            started: 3600 + 120,
            cpu: 61,
            cmd: "sleep 1000".into(),
        }]);
        let mut lines = t.lines();
        assert!(lines.next().unwrap().starts_with("UID"));
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "0", "7", "1", "0", "01:02", "?", "00:01:01", "sleep", "1000"
            ]
        );
    }
}
