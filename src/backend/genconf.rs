//! The one writer of generated configuration: LXC config lines and Proxmox (`pct`)
//! options. Values come from the spec, its annotations and the rootfs, so each is
//! checked against what the target's parser would make of it; anything it would
//! read differently from what was meant (another key, a trimmed or dequoted value, a
//! second property) is refused, naming the key. No other code writes those files.

/// A field the backend cannot honour as given; becomes `Error::Unsupported`.
pub type Refusal = String;

/// Control characters end or corrupt a line in every format written here.
fn has_control(v: &str) -> bool {
    v.chars().any(char::is_control)
}

/// LXC config text: one `key = value` per line, in order.
#[derive(Default, Debug)]
pub struct LxcConf {
    entries: Vec<(String, String)>,
}

impl LxcConf {
    /// Adds `key = value`. The key is a fixed `lxc.` name (a sysctl's name at most);
    /// the value must come back from LXC's parser (confile.c `parse_line`: split at
    /// the first `=`, whitespace trimmed, one pair of matching quotes removed) as is.
    pub fn set(&mut self, key: &str, value: impl AsRef<str>) -> Result<(), Refusal> {
        let value = value.as_ref();
        let key_ok = key.starts_with("lxc.")
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !key_ok {
            return Err(format!("an LXC key {key:?}"));
        }
        if has_control(value) {
            return Err(format!(
                "{key}: a value with a line break or control character ({value:?})"
            ));
        }
        if value.trim() != value {
            return Err(format!(
                "{key}: a value with leading or trailing blanks ({value:?})"
            ));
        }
        let quoted = value.len() > 1
            && (value.starts_with('"') || value.starts_with('\''))
            && value.ends_with(&value[..1]);
        if quoted {
            return Err(format!("{key}: a value in quotes ({value:?})"));
        }
        // LXC reads its mount entries with getmntent, which skips a line starting
        // with `#` as a comment: the mount would silently not be made.
        if key == "lxc.mount.entry" && value.starts_with('#') {
            return Err(format!("{key}: an entry read as a comment ({value:?})"));
        }
        self.entries.push((key.to_string(), value.to_string()));
        Ok(())
    }

    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.entries {
            out.push_str(key);
            out.push_str(" = ");
            out.push_str(value);
            out.push('\n');
        }
        out
    }
}

/// LXC's reading of a config text (confile.c): blank and `#` lines skipped, the rest
/// split at the first `=`, trimmed, one pair of matching quotes removed. The check
/// that what `LxcConf` wrote is what LXC reads.
pub fn parse_lxc(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let mut value = value.trim_matches([' ', '\t', '\r']);
        if value.len() > 1
            && (value.starts_with('"') || value.starts_with('\''))
            && value.ends_with(&value[..1])
        {
            value = &value[1..value.len() - 1];
        }
        out.push((key.trim_matches([' ', '\t']).to_string(), value.to_string()));
    }
    out
}

/// A path as one field of an LXC mount entry (fstab syntax, split at blanks):
/// blanks and backslashes octal-escaped, as getmntent reads them back.
pub fn fstab_field(field: &str, path: &str) -> Result<String, Refusal> {
    if path.is_empty() || has_control(path) {
        return Err(format!("{field} {path:?}"));
    }
    Ok(path
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011"))
}

/// `pct` options, each `--name value`, as pct's argument parser takes them; the
/// values end up in the CT's config (`name: value` lines), PVE's property strings
/// split at `,` and `=`.
#[derive(Default, Debug)]
pub struct PctOptions {
    args: Vec<String>,
}

impl PctOptions {
    /// Adds `--option value`. `value` is whole as PVE parses it: a property string's
    /// parts are checked by `property`.
    pub fn set(&mut self, option: &str, value: impl Into<String>) -> Result<(), Refusal> {
        let value = value.into();
        let name_ok = !option.is_empty()
            && option
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !name_ok {
            return Err(format!("a pct option {option:?}"));
        }
        if has_control(&value) || value.starts_with('-') {
            return Err(format!("pct --{option}: value {value:?}"));
        }
        self.args.push(format!("--{option}"));
        self.args.push(value);
        Ok(())
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }

    pub fn into_args(self) -> Vec<String> {
        self.args
    }
}

/// One value inside a PVE property string (`vol,mp=/x,ro=1`), where `,` and `=`
/// separate parts: refused if it holds either, a blank at an end, or a control
/// character.
pub fn property(field: &str, value: &str) -> Result<String, Refusal> {
    if value.is_empty() || value.contains([',', '=']) || has_control(value) || value.trim() != value
    {
        return Err(format!(
            "{field} {value:?} (no ',', '=', control characters or blanks at the ends in a Proxmox property)"
        ));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lxc_lines_read_back_as_written() {
        let mut c = LxcConf::default();
        c.set("lxc.uts.name", "host").unwrap();
        c.set("lxc.mount.entry", "/a b none bind 0 0").unwrap();
        c.set("lxc.apparmor.profile", "it's").unwrap();
        assert_eq!(parse_lxc(&c.text()), c.entries());
    }

    #[test]
    fn lxc_refuses_what_the_parser_would_change() {
        let mut c = LxcConf::default();
        for bad in [
            "unconfined\nlxc.hook.pre-start = /tmp/x",
            "a\rb",
            "a\0",
            " lead",
            "trail\t",
            "\"quoted\"",
            "'q'",
        ] {
            assert!(c.set("lxc.apparmor.profile", bad).is_err(), "{bad:?}");
        }
        assert!(c.set("lxc.hook.x\n", "v").is_err());
        assert!(c.set("lxc.sysctl.a=b", "v").is_err());
        assert!(c.set("hook", "v").is_err());
        assert!(c.set("lxc.mount.entry", "#src dst none bind 0 0").is_err());
        assert!(c.entries().is_empty());
    }

    #[test]
    fn pct_values() {
        let mut o = PctOptions::default();
        assert!(o.set("hostname", "a\nb").is_err());
        assert!(o.set("hostname", "--force").is_err());
        assert!(o.set("mp0\n", "x").is_err());
        o.set("mp0", "/a,mp=/b").unwrap();
        assert_eq!(o.args(), ["--mp0", "/a,mp=/b"]);
        assert!(property("mount source", "/a,b").is_err());
        assert!(property("mount source", "/a=b").is_err());
        assert!(property("mount source", "/a b").is_ok());
    }
}
