//! Backend `qm` (a Proxmox VM per container), being built (issue 12). So far: the
//! guest's initramfs; the guest's side (`supervise::guest`) and the framed channel
//! (`supervise::frames`) are in place, the host's side and `qm` are next.

pub mod initramfs;
