//! Backend `qm` (a Proxmox VM per container), being built: so far the guest's
//! initramfs. See issue 12.

pub mod initramfs;
