//! The Debian package as an admin gets it: `hack/package.sh` builds it (the release
//! binary, so the first run takes minutes), dpkg installs, removes and purges it on
//! this machine, and the machine is left as it was. Also `nexcage completion`, which
//! the package's completion files come from. Needs root, as CI has.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serial_test::serial;

const BINARY: &str = "/usr/bin/nexcage";
const CONFIG_DIR: &str = "/etc/nexcage";
const CONFIG: &str = "/etc/nexcage/config.json";
/// Shell, where the package puts its script, and a line only that shell's script has.
const COMPLETIONS: [(&str, &str, &str); 3] = [
    (
        "bash",
        "/usr/share/bash-completion/completions/nexcage",
        "complete -F _nexcage",
    ),
    (
        "zsh",
        "/usr/share/zsh/vendor-completions/_nexcage",
        "#compdef nexcage",
    ),
    (
        "fish",
        "/usr/share/fish/vendor_completions.d/nexcage.fish",
        "complete -c nexcage",
    ),
];

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env_remove("NEXCAGE_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Runs and asserts success; returns stdout.
fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        out.status,
        common::stdout(&out),
        common::stderr(&out)
    );
    common::stdout(&out)
}

#[test]
fn completion_needs_no_root_or_config() {
    let missing = tempfile::tempdir().unwrap().path().join("gone");
    let root = missing.join("root");
    let config = missing.join("config.json");
    for (shell, _, marker) in COMPLETIONS {
        let script = ok(
            common::nexcage(),
            &[
                "--root",
                root.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "completion",
                shell,
            ],
        );
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for subcommand in ["create", "exec", "route", "completion"] {
            assert!(script.contains(subcommand), "{shell}: no {subcommand}");
        }
        assert!(!script.contains("guest-init"), "{shell}: offers guest-init");
    }
    assert!(!missing.exists(), "completion made {}", missing.display());
}

#[test]
fn completion_refuses_an_unknown_shell() {
    let out = run(common::nexcage(), &["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    if let Some(wrong) = common::refusal(&out, &["invalid value 'tcsh'"]) {
        panic!("completion tcsh: {wrong}");
    }
    assert!(
        common::stderr(&out).contains("bash, zsh, fish"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
#[serial(dpkg)]
fn deb_installs_removes_and_purges() {
    let mut machine = Machine::save();
    let scratch = tempfile::tempdir().unwrap();
    let (out, tmp) = (scratch.path().join("out"), scratch.path().join("tmp"));
    fs::create_dir(&tmp).unwrap();

    // Twice: the second run replaces the first's package and leaves nothing else.
    let deb = package(&out, &tmp);
    assert_eq!(package(&out, &tmp), deb);
    let name = format!("nexcage_{}_amd64.deb", env!("CARGO_PKG_VERSION"));
    assert_eq!(entries(&out), [name]);
    assert_eq!(entries(&tmp), Vec::<String>::new(), "left in $TMPDIR");
    let deb = deb.to_str().unwrap();
    let paths = package_paths(deb);
    let before = existing(&paths);

    ok("dpkg", &["--install", deb]);
    let version = ok(BINARY, &["--version"]);
    assert!(
        version.starts_with(&format!("nexcage version {}\n", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    assert_man_pages();
    assert_completions();
    assert_conffile();
    let daemon: serde_json::Value = serde_json::from_str(
        &fs::read_to_string("/usr/share/doc/nexcage/examples/docker-daemon.json").unwrap(),
    )
    .expect("docker-daemon.json is JSON");
    assert_eq!(daemon["runtimes"]["nexcage"]["path"], BINARY);

    // Removed: the binary and the rest go, the conffile stays until the purge.
    ok("dpkg", &["--remove", "nexcage"]);
    assert!(!Path::new(BINARY).exists(), "{BINARY} left by --remove");
    assert!(Path::new(CONFIG).exists(), "--remove took the conffile");
    assert_eq!(status(), "deinstall ok config-files");
    ok("dpkg", &["--purge", "nexcage"]);
    assert!(!on_machine(), "still {}", status());
    assert!(!Path::new(CONFIG).exists(), "{CONFIG} left by --purge");

    machine.restore();
    assert_eq!(
        existing(&paths),
        before,
        "the package's paths are not as before the install"
    );
    machine.assert_restored();
}

/// `hack/package.sh OUT` with `$TMPDIR` at `tmp`; returns the path it prints. No
/// deadline: the first run builds the release binary.
fn package(out: &Path, tmp: &Path) -> PathBuf {
    let script = common::repo().join("hack/package.sh");
    let result = Command::new("bash")
        .arg(&script)
        .arg(out)
        .env("TMPDIR", tmp)
        .output()
        .expect("run bash");
    assert!(
        result.status.success(),
        "{script:?} failed ({}): {}",
        result.status,
        common::stderr(&result)
    );
    let printed = common::stdout(&result);
    let deb = PathBuf::from(printed.trim_end());
    assert!(deb.is_file(), "{script:?} printed {printed:?}");
    deb
}

/// The paths in the package (`/`, `/etc`, …), from `dpkg-deb --contents`.
fn package_paths(deb: &str) -> Vec<String> {
    ok("dpkg-deb", &["--contents", deb])
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Which of `paths` exist now; the config is `Machine`'s to compare.
fn existing(paths: &[String]) -> BTreeMap<String, bool> {
    paths
        .iter()
        .filter(|p| *p != CONFIG)
        .map(|p| (p.clone(), Path::new(p).exists()))
        .collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// dpkg's status of the package; empty when dpkg knows nothing of it.
fn status() -> String {
    let out = run(
        "dpkg-query",
        &["--showformat=${Status}", "--show", "nexcage"],
    );
    common::stdout(&out)
}

/// Installed, or removed with its conffiles left.
fn on_machine() -> bool {
    let status = status();
    !(status.is_empty() || status.ends_with(" not-installed"))
}

fn assert_man_pages() {
    for page in ["nexcage", "nexcage-create", "nexcage-completion"] {
        let path = ok("man", &["-w", page]);
        assert_eq!(path.trim_end(), format!("/usr/share/man/man1/{page}.1.gz"));
    }
    let out = Command::new("man")
        .args(["-P", "cat", "nexcage-create"])
        .env("MANWIDTH", "200")
        .output()
        .unwrap();
    let text = common::stdout(&out);
    assert!(text.contains("--pid-file"), "man nexcage-create: {text}");
}

fn assert_completions() {
    for (shell, path, marker) in COMPLETIONS {
        let installed = fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(installed, ok(BINARY, &["completion", shell]), "{path}");
        assert!(installed.contains(marker), "{path}: no {marker:?}");
    }
    // bash itself takes the script and registers the completion function.
    let registered = ok(
        "bash",
        &[
            "-c",
            &format!("source {} && complete -p nexcage", COMPLETIONS[0].1),
        ],
    );
    assert!(registered.contains("-F _nexcage nexcage"), "{registered}");
}

/// Listed as a conffile with the shipped bytes, and the config nexcage then reads.
fn assert_conffile() {
    let listed = ok(
        "dpkg-query",
        &["--showformat=${Conffiles}", "--show", "nexcage"],
    );
    let md5 = ok("md5sum", &[CONFIG]);
    let md5 = md5.split_whitespace().next().unwrap();
    assert_eq!(listed.trim(), format!("{CONFIG} {md5}"));
    let shipped = fs::read(common::repo().join("hack/package/config.json")).unwrap();
    assert_eq!(fs::read(CONFIG).unwrap(), shipped);
    let bundle = tempfile::tempdir().unwrap();
    ok(
        BINARY,
        &["spec", "--bundle", bundle.path().to_str().unwrap()],
    );
    let why = ok(
        BINARY,
        &["route", "--bundle", bundle.path().to_str().unwrap(), "x"],
    );
    assert_eq!(why.trim_end(), format!("crun (default; config: {CONFIG})"));
}

/// What the test changes on the machine, saved first: whether /etc/nexcage was there
/// (and its mode and owner), and an admin's own config.json, moved aside for the
/// test (a rename, so it survives even a killed test under a name that says whose it
/// is). `restore` purges the package and puts both back; so does dropping it, after a
/// failure.
struct Machine {
    dir: Option<fs::Metadata>,
    config: Option<(PathBuf, Vec<u8>, fs::Metadata)>,
    restored: bool,
}

impl Machine {
    fn save() -> Machine {
        assert!(
            !on_machine(),
            "the nexcage package is on this machine ({}); this test installs and purges its \
             own (dpkg --purge nexcage first)",
            status()
        );
        let dir = fs::symlink_metadata(CONFIG_DIR).ok();
        let config = fs::symlink_metadata(CONFIG).ok().map(|meta| {
            let aside = PathBuf::from(format!(
                "/etc/nexcage-config.json.saved-by-nexcage-test-{}",
                std::process::id()
            ));
            let bytes = fs::read(CONFIG).unwrap();
            fs::rename(CONFIG, &aside).unwrap();
            (aside, bytes, meta)
        });
        Machine {
            dir,
            config,
            restored: false,
        }
    }

    fn restore(&mut self) {
        if self.restored {
            return;
        }
        self.restored = true;
        if on_machine() {
            let _ = run("dpkg", &["--purge", "nexcage"]);
        }
        if let Some(meta) = &self.dir
            && !Path::new(CONFIG_DIR).exists()
        {
            let _ = fs::create_dir(CONFIG_DIR);
            let _ = fs::set_permissions(CONFIG_DIR, meta.permissions());
            let _ = std::os::unix::fs::chown(CONFIG_DIR, Some(meta.uid()), Some(meta.gid()));
        }
        if let Some((aside, _, _)) = &self.config {
            let _ = fs::rename(aside, CONFIG);
        }
    }

    fn assert_restored(&self) {
        let dir = fs::symlink_metadata(CONFIG_DIR).ok();
        assert_eq!(
            dir.as_ref().map(|m| (m.mode(), m.uid(), m.gid())),
            self.dir.as_ref().map(|m| (m.mode(), m.uid(), m.gid())),
            "{CONFIG_DIR}"
        );
        if let Some((_, bytes, meta)) = &self.config {
            let now = fs::symlink_metadata(CONFIG).unwrap();
            assert_eq!(&fs::read(CONFIG).unwrap(), bytes, "{CONFIG}");
            assert_eq!(
                (now.ino(), now.permissions().mode(), now.uid(), now.gid()),
                (
                    meta.ino(),
                    meta.permissions().mode(),
                    meta.uid(),
                    meta.gid()
                ),
                "{CONFIG}"
            );
        } else {
            assert!(!Path::new(CONFIG).exists(), "{CONFIG} left");
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.restore();
    }
}
