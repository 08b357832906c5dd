//! A VM's network is the engine's: QEMU's tap is moved into the container's network
//! namespace (where podman's netavark, CNI or Docker's libnetwork put a veth), the
//! two are joined by redirecting each one's ingress to the other's egress (as Kata
//! Containers does), and the guest's NIC takes the veth's MAC, MTU, addresses and
//! routes. The engine's port forwards and firewall rules then reach the guest as they
//! would reach a container.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol, RouteType};

use super::netlink::{Netlink, link_name};
use crate::error::{Error, Result};

/// What the guest's NICs become, in order.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetSetup {
    pub links: Vec<NetLink>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetLink {
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub addresses: Vec<(IpAddr, u8)>,
    pub routes: Vec<NetRoute>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetRoute {
    /// None: the default route.
    pub destination: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    /// The gateway is on the link even outside its subnet (`onlink`).
    #[serde(default)]
    pub onlink: bool,
}

/// The tap of the VM whose sockets are named by `key`: unique on the host (QEMU
/// makes it there by name), within the 15 bytes of an interface name.
pub fn tap_name(key: &str) -> String {
    // FNV-1a: a stable name from the key, no randomness needed.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("nxt{:012x}", hash & 0xffff_ffff_ffff)
}

fn index_of(links: &[LinkMessage], name: &str) -> Option<u32> {
    links
        .iter()
        .find(|l| link_name(l) == Some(name))
        .map(|l| l.header.index)
}

/// On the host: moves the tap `name` into the network namespace `netns`. Found by
/// name alone: the host's other links are none of our business.
pub fn move_tap(name: &str, netns: BorrowedFd<'_>) -> Result<()> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| Error::Usage(format!("interface name {name:?}")))?;
    // SAFETY: if_nametoindex(3) reads the NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(Error::Usage(format!(
            "QEMU made no network interface {name}"
        )));
    }
    let mut nl = Netlink::open()?;
    nl.set_link(index, vec![LinkAttribute::NetNsFd(netns.as_raw_fd())], None)
}

/// In the container's network namespace: joins the engine's interface to the tap
/// `tap`; returns what the guest's NIC becomes (nothing without an interface, as
/// with `--network none`) and the interface's index (see [`disconnect`]). Only links
/// that are up count: a new namespace also has the kernel's fallback tunnels (sit0,
/// tunl0, gretap0...), down.
pub fn connect(tap: &str) -> Result<(NetSetup, Option<u32>)> {
    let mut nl = Netlink::open()?;
    let links = nl.links()?;
    let tap_index =
        index_of(&links, tap).ok_or_else(|| Error::Usage(format!("no interface {tap}")))?;
    let engine: Vec<&LinkMessage> = links
        .iter()
        .filter(|l| l.header.link_layer_type != LinkLayerType::Loopback)
        .filter(|l| l.header.index != tap_index)
        .filter(|l| {
            l.header
                .flags
                .contains(netlink_packet_route::link::LinkFlags::Up)
        })
        .collect();
    let link = match engine.as_slice() {
        [] => return Ok((NetSetup::default(), None)),
        [one] => *one,
        many => {
            let names: Vec<&str> = many.iter().filter_map(|l| link_name(l)).collect();
            return Err(Error::Usage(format!(
                "the qm backend connects one network interface; the container's network namespace has {}",
                names.join(", ")
            )));
        }
    };
    let index = link.header.index;
    let name = link_name(link).unwrap_or("eth0").to_string();
    let mac = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) => Some(m.clone()),
            _ => None,
        })
        .filter(|m| m.len() == 6)
        .ok_or_else(|| Error::Usage(format!("interface {name} has no MAC address")))?;
    let mtu = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        })
        .unwrap_or(1500);
    let addresses = nl
        .addresses()?
        .into_iter()
        .filter(|a| a.header.index == index)
        .filter_map(|a| {
            let local = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            // IPv6 link-local addresses come from the MAC, in the guest as here.
            local
                .or(address)
                .filter(|ip| !is_link_local(ip))
                .map(|ip| (ip, a.header.prefix_len))
        })
        .collect();
    let mut routes = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        // Without IPv6 the kernel answers the IPv6 dump with every family's routes.
        for r in nl
            .routes(family)?
            .into_iter()
            .filter(|r| r.header.address_family == family)
        {
            let through = r
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == index));
            // The kernel's own (the addresses' subnets) come with the addresses.
            if !through
                || r.header.protocol == RouteProtocol::Kernel
                || r.header.kind != RouteType::Unicast
                || r.header.table != netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN
            {
                continue;
            }
            let ip = |a: &RouteAddress| match a {
                RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
                RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
                _ => None,
            };
            let destination = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(d) => ip(d),
                _ => None,
            });
            let gateway = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(g) => ip(g),
                _ => None,
            });
            routes.push(NetRoute {
                destination: destination.map(|d| (d, r.header.destination_prefix_length)),
                gateway,
                onlink: r
                    .header
                    .flags
                    .contains(netlink_packet_route::route::RouteFlags::Onlink),
            });
        }
    }
    nl.set_link(tap_index, vec![LinkAttribute::Mtu(mtu)], Some(true))?;
    // From the guest, only frames with the address the engine gave the interface: a
    // guest cannot pose as another host on the engine's network.
    let source: Option<[u8; 6]> = mac.as_slice().try_into().ok();
    let joined = nl
        .redirect(index, tap_index, None)
        .and_then(|()| nl.redirect(tap_index, index, source));
    if let Err(e) = joined {
        let _ = nl.unredirect(index);
        return Err(e);
    }
    Ok((
        NetSetup {
            links: vec![NetLink {
                name,
                mac,
                mtu,
                addresses,
                routes,
            }],
        },
        Some(index),
    ))
}

/// In the container's network namespace, once the VM is gone: the engine's interface
/// gets its traffic back (the tap's filter went with the tap). A namespace may
/// outlive the container: a pod's, a restarted container's.
pub fn disconnect(index: u32) {
    if let Ok(mut nl) = Netlink::open() {
        let _ = nl.unredirect(index);
    }
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => false,
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// In the guest: the loopback interface up, as in any new network namespace
/// configured by an engine.
pub fn loopback_up() -> Result<()> {
    let mut nl = Netlink::open()?;
    for link in nl.links()? {
        if link.header.link_layer_type == LinkLayerType::Loopback {
            nl.set_link(link.header.index, Vec::new(), Some(true))?;
        }
    }
    Ok(())
}

/// In the guest: every NIC up, as it is.
pub fn nics_up() -> Result<()> {
    let mut nl = Netlink::open()?;
    for link in nl.links()? {
        if link.header.link_layer_type == LinkLayerType::Ether {
            nl.set_link(link.header.index, Vec::new(), Some(true))?;
        }
    }
    await_carrier(&mut nl)
}

/// How long the guest waits for its NICs' carrier before the workload starts anyway.
const CARRIER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Until every NIC that is up has its carrier (the kernel reports it a moment after
/// the link comes up), so the workload's first packets are not held back.
fn await_carrier(nl: &mut Netlink) -> Result<()> {
    use netlink_packet_route::link::LinkFlags;
    let deadline = std::time::Instant::now() + CARRIER_TIMEOUT;
    loop {
        let waiting = nl.links()?.iter().any(|l| {
            l.header.link_layer_type == LinkLayerType::Ether
                && l.header.flags.contains(LinkFlags::Up)
                && !l.header.flags.contains(LinkFlags::Running)
        });
        if !waiting || std::time::Instant::now() > deadline {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// In the guest: each NIC (in the order the kernel found them) becomes the
/// engine's interface it is joined to.
pub fn apply(setup: &NetSetup) -> Result<()> {
    if setup.links.is_empty() {
        return Ok(());
    }
    let mut nl = Netlink::open()?;
    let mut nics: Vec<LinkMessage> = nl
        .links()?
        .into_iter()
        .filter(|l| l.header.link_layer_type == LinkLayerType::Ether)
        .collect();
    nics.sort_by_key(|l| l.header.index);
    if nics.len() < setup.links.len() {
        return Err(Error::Usage(format!(
            "the VM has {} network interfaces, {} expected",
            nics.len(),
            setup.links.len()
        )));
    }
    for (nic, link) in nics.iter().zip(&setup.links) {
        let index = nic.header.index;
        nl.set_link(
            index,
            vec![
                LinkAttribute::IfName(link.name.clone()),
                LinkAttribute::Address(link.mac.clone()),
                LinkAttribute::Mtu(link.mtu),
            ],
            Some(true),
        )?;
        // What the guest's kernel made itself already (a subnet's route once its
        // address is there) is as good as ours.
        let made = |r: Result<()>| match r {
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            other => other,
        };
        for (address, prefix) in &link.addresses {
            made(nl.add_address(index, *address, *prefix))?;
        }
        // Routes on the link first: a gateway must be reachable when its route comes.
        let mut routes: Vec<&NetRoute> = link.routes.iter().collect();
        routes.sort_by_key(|r| r.gateway.is_some());
        for r in routes {
            made(nl.add_route(index, r.destination, r.gateway, r.onlink))?;
        }
    }
    await_carrier(&mut nl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_and_differ() {
        let a = tap_name("100-4242");
        let b = tap_name("100-4243");
        assert!(a.len() <= 15, "{a}");
        assert_ne!(a, b);
        assert_eq!(a, tap_name("100-4242"));
    }

    #[test]
    fn link_local_is_left_to_the_guest() {
        assert!(is_link_local(&"fe80::1".parse().unwrap()));
        assert!(!is_link_local(&"fd00::1".parse().unwrap()));
        assert!(!is_link_local(&"10.88.0.2".parse().unwrap()));
    }
}
