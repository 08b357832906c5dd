//! The bundle's rootfs as a Proxmox template (`vztmpl`), packed once per content:
//! the name is a sha256 of the tree (paths, types, modes, owners, device numbers,
//! link targets and every file's bytes), so a rootfs is never run from another's
//! template however alike their metadata, and an unchanged one is not packed again.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::config::PctConfig;
use crate::error::{Error, IoContext, Result};

const PREFIX: &str = "nexcage-";
const SUFFIX: &str = ".tar.zst";

/// The template for `rootfs`, packed if needed; returns `<storage>:vztmpl/<file>`.
pub fn ensure(cfg: &PctConfig, rootfs: &Path) -> Result<String> {
    let meta = fs::metadata(rootfs).map_err(|e| Error::Bundle {
        path: rootfs.to_path_buf(),
        reason: format!("rootfs: {e}"),
    })?;
    if !meta.is_dir() {
        return Err(Error::Bundle {
            path: rootfs.to_path_buf(),
            reason: "rootfs is not a directory".into(),
        });
    }
    let name = format!("{PREFIX}{}{SUFFIX}", fingerprint(rootfs)?);
    let path = cfg.template_dir.join(&name);
    if !path.exists() {
        pack(rootfs, &cfg.template_dir, &path)?;
    }
    Ok(format!("{}:vztmpl/{name}", cfg.template_storage))
}

/// Packs into a temporary name first, so a half-written template is never used; a
/// temporary left by a killed packer is swept (here and by `delete`) once its pid is
/// gone, by the node that made it (the storage may be shared by a cluster).
fn pack(rootfs: &Path, dir: &Path, target: &Path) -> Result<()> {
    fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
    sweep(dir);
    let temp = dir.join(format!("{}{}{SUFFIX}", temp_prefix(), std::process::id()));
    let mut tar = Command::new("tar");
    // SAFETY: prctl is async-signal-safe. If we are killed, tar goes too, so that the
    // temporary it writes is not left growing after the sweep.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut tar, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = tar
        .args(["--zstd", "--numeric-owner", "--one-file-system", "-C"])
        .arg(rootfs)
        .arg("-cf")
        .arg(&temp)
        .arg(".")
        .stdin(Stdio::null())
        .output()
        .context(|| "run tar")?;
    if !out.status.success() {
        let _ = fs::remove_file(&temp);
        return Err(Error::Bundle {
            path: rootfs.to_path_buf(),
            reason: format!(
                "packing the rootfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    fs::rename(&temp, target).context(|| format!("rename into {}", target.display()))
}

/// `.nexcage-tmp-<node>-`: whose temporaries a node may judge by its own pids.
fn temp_prefix() -> String {
    let node = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{PREFIX}tmp-{node}-")
}

pub fn sweep(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let ours = temp_prefix();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(&ours)
            .and_then(|rest| rest.strip_suffix(SUFFIX))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// sha256 over every entry, in a stable order: what tar packs of it (mtimes aside,
/// which change nothing the container runs).
fn fingerprint(rootfs: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = rootfs.join(&rel);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .context(|| format!("read {}", dir.display()))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = rel.join(entry.file_name());
            let meta = entry
                .metadata()
                .context(|| format!("stat {}", path.display()))?;
            hasher.update(path.as_os_str().as_encoded_bytes());
            for n in [
                meta.mode() as u64,
                meta.uid() as u64,
                meta.gid() as u64,
                meta.size(),
                meta.rdev(),
            ] {
                hasher.update(n.to_le_bytes());
            }
            let file_type = meta.file_type();
            if file_type.is_symlink() {
                let target = fs::read_link(entry.path())
                    .context(|| format!("read link {}", path.display()))?;
                hasher.update(target.as_os_str().as_encoded_bytes());
            } else if file_type.is_file() {
                let mut file =
                    fs::File::open(entry.path()).context(|| format!("read {}", path.display()))?;
                let mut buf = vec![0; 1 << 16];
                loop {
                    let n = std::io::Read::read(&mut file, &mut buf)
                        .context(|| format!("read {}", path.display()))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
            } else if meta.is_dir() {
                stack.push(path);
            }
            hasher.update([0]);
        }
    }
    let digest = hasher.finalize();
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}
