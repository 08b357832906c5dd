//! Mount destinations resolved inside the container's root, as runc resolves them
//! (filepath-securejoin): symlinks are followed, but from the container's root, `..`
//! stops at that root, and what does not exist yet is taken as written. The result
//! has no symlink and no `..` in it, so the tools that create and mount it (LXC's
//! `create=dir`, its mount) never leave the rootfs, whatever the image holds.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use super::genconf::Refusal;

/// Symlinks followed in one path before it is refused (the kernel's own limit).
const MAX_LINKS: u32 = 40;

/// The container's tree as it will be when each mount is made: the rootfs, with the
/// spec's earlier mounts on top.
pub struct Tree<'a> {
    rootfs: &'a Path,
    /// Earlier mounts, in order: their resolved destination and, for a bind of a
    /// directory, its source (what is under the destination then); None for a new
    /// filesystem (tmpfs, proc, ...), whose contents cannot be seen from here.
    mounts: Vec<(PathBuf, Option<PathBuf>)>,
}

enum Entry {
    Link(PathBuf),
    /// A directory, a file, nothing yet, or what a new filesystem will hold.
    Other,
}

impl<'a> Tree<'a> {
    pub fn new(rootfs: &'a Path) -> Tree<'a> {
        Tree {
            rootfs,
            mounts: Vec::new(),
        }
    }

    /// Notes a mount at `dest` (resolved): a bind of `source`, or a new filesystem.
    pub fn mounted(&mut self, dest: PathBuf, bind_source: Option<PathBuf>) {
        self.mounts.push((dest, bind_source));
    }

    /// `dest` (absolute, as the spec gives it) resolved inside the tree; relative to
    /// the root, so that it reads as LXC's mount target.
    pub fn resolve(&self, dest: &Path) -> Result<PathBuf, Refusal> {
        let mut pending: VecDeque<OsString> = components(dest);
        let mut resolved = PathBuf::new();
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            let candidate = resolved.join(&part);
            match self.lookup(&candidate) {
                Entry::Link(target) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(format!(
                            "mount destination {dest:?} (too many levels of symbolic links)"
                        ));
                    }
                    if target.is_absolute() {
                        resolved = PathBuf::new();
                    }
                    for c in components(&target).into_iter().rev() {
                        pending.push_front(c);
                    }
                }
                Entry::Other => resolved = candidate,
            }
        }
        Ok(resolved)
    }

    /// What `rel` (no symlink and no `..` in it) is: looked up where it will be, in
    /// the last mount that covers it, else in the rootfs.
    fn lookup(&self, rel: &Path) -> Entry {
        let host = match self.mounts.iter().rev().find(|(d, _)| rel.starts_with(d)) {
            Some((dest, Some(source))) => match rel.strip_prefix(dest) {
                Ok(rest) => source.join(rest),
                Err(_) => return Entry::Other,
            },
            Some((_, None)) => return Entry::Other,
            None => self.rootfs.join(rel),
        };
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => match std::fs::read_link(&host) {
                Ok(target) => Entry::Link(target),
                Err(_) => Entry::Other,
            },
            _ => Entry::Other,
        }
    }
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn stays_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc/real")).unwrap();
        symlink("/etc/real", r.join("abs")).unwrap();
        symlink("../../../../tmp", r.join("etc/up")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        let tree = Tree::new(r);
        let resolve = |p: &str| tree.resolve(Path::new(p)).map(|p| p.display().to_string());
        assert_eq!(resolve("/../../../../tmp/x").unwrap(), "tmp/x");
        assert_eq!(resolve("/abs/sub").unwrap(), "etc/real/sub");
        assert_eq!(resolve("/etc/up/x").unwrap(), "tmp/x");
        assert_eq!(resolve("/new/../etc").unwrap(), "etc");
        assert!(resolve("/loop/x").is_err());
    }

    #[test]
    fn under_earlier_mounts() {
        let root = tempfile::tempdir().unwrap();
        let volume = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("dev")).unwrap();
        symlink("/etc", root.path().join("dev/pts")).unwrap();
        symlink("/var", volume.path().join("link")).unwrap();
        let mut tree = Tree::new(root.path());
        // A new /dev hides the image's /dev/pts link.
        tree.mounted("dev".into(), None);
        assert_eq!(
            tree.resolve(Path::new("/dev/pts")).unwrap(),
            Path::new("dev/pts")
        );
        // A volume's links resolve from the container's root.
        tree.mounted("data".into(), Some(volume.path().to_path_buf()));
        assert_eq!(
            tree.resolve(Path::new("/data/link/x")).unwrap(),
            Path::new("var/x")
        );
    }
}
