//! The few rtnetlink requests nexcage makes (rust-netlink's message types over a
//! blocking socket): list a namespace's links, addresses and routes; configure a
//! link; add addresses and routes; redirect one link's ingress to another's egress
//! (an ingress qdisc with a u32 match-all and a mirred redirect, as Kata Containers
//! connects a VM's tap to the engine's veth). The socket works in the network
//! namespace of the thread that opened it.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::{Error, Result};

/// `ETH_P_ALL` in network order, as tc's filters take their protocol.
const ALL_PROTOCOLS: u16 = 0x0003u16.to_be();

pub struct Netlink {
    socket: Socket,
    seq: u32,
}

fn failed(what: &str, e: io::Error) -> Error {
    Error::io(format!("netlink: {what}"), e)
}

impl Netlink {
    pub fn open() -> Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| failed("socket", e))?;
        socket.bind_auto().map_err(|e| failed("bind", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| failed("connect", e))?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends one request; returns what the kernel answered before its ack (or the
    /// end of a dump), or its error.
    fn request(
        &mut self,
        what: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(|e| failed(what, e))?;
        let mut answers = Vec::new();
        loop {
            let (bytes, _) = self.socket.recv_from_full().map_err(|e| failed(what, e))?;
            let mut offset = 0;
            while offset < bytes.len() {
                let reply =
                    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[offset..]) {
                        Ok(reply) => reply,
                        // One the crate cannot parse (a link kind it does not know): skipped
                        // by its header's length, the rest of the answer still read.
                        Err(e) => match bytes.get(offset..offset + 4) {
                            Some(len) => {
                                let len = u32::from_ne_bytes([len[0], len[1], len[2], len[3]]);
                                if len < 16 {
                                    return Err(failed(
                                        what,
                                        io::Error::new(io::ErrorKind::InvalidData, e),
                                    ));
                                }
                                offset += (len as usize + 3) & !3;
                                continue;
                            }
                            None => break,
                        },
                    };
                let length = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    match reply.payload {
                        NetlinkPayload::Done(_) => return Ok(answers),
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(answers),
                                Some(code) => Err(failed(
                                    what,
                                    io::Error::from_raw_os_error(code.get().abs()),
                                )),
                            };
                        }
                        NetlinkPayload::InnerMessage(m) => answers.push(m),
                        _ => {}
                    }
                }
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
    }

    /// A dump's answers that `pick` keeps.
    fn dump<T>(
        &mut self,
        what: &str,
        query: RouteNetlinkMessage,
        pick: impl Fn(RouteNetlinkMessage) -> Option<T>,
    ) -> Result<Vec<T>> {
        Ok(self
            .request(what, query, NLM_F_DUMP)?
            .into_iter()
            .filter_map(pick)
            .collect())
    }

    pub fn links(&mut self) -> Result<Vec<LinkMessage>> {
        let all = RouteNetlinkMessage::GetLink(LinkMessage::default());
        self.dump("list links", all, |m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })
    }

    pub fn addresses(&mut self) -> Result<Vec<AddressMessage>> {
        let all = RouteNetlinkMessage::GetAddress(AddressMessage::default());
        self.dump("list addresses", all, |m| match m {
            RouteNetlinkMessage::NewAddress(a) => Some(a),
            _ => None,
        })
    }

    pub fn routes(&mut self, family: AddressFamily) -> Result<Vec<RouteMessage>> {
        let mut query = RouteMessage::default();
        query.header.address_family = family;
        let all = RouteNetlinkMessage::GetRoute(query);
        self.dump("list routes", all, |m| match m {
            RouteNetlinkMessage::NewRoute(r) => Some(r),
            _ => None,
        })
    }

    /// Changes link `index`: its attributes, and up or down if `up` says.
    pub fn set_link(
        &mut self,
        index: u32,
        attributes: Vec<LinkAttribute>,
        up: Option<bool>,
    ) -> Result<()> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        if let Some(up) = up {
            link.header.change_mask = LinkFlags::Up;
            if up {
                link.header.flags = LinkFlags::Up;
            }
        }
        link.attributes = attributes;
        self.request("set link", RouteNetlinkMessage::SetLink(link), NLM_F_ACK)
            .map(drop)
    }

    /// Adds `address/prefix` to link `index` (IPv6 without duplicate detection: the
    /// address is the engine's, checked where it was given).
    pub fn add_address(&mut self, index: u32, address: IpAddr, prefix: u8) -> Result<()> {
        let mut a = AddressMessage::default();
        a.header.index = index;
        a.header.prefix_len = prefix;
        a.header.family = family_of(&address);
        if address.is_ipv6() {
            a.header.flags = AddressHeaderFlags::Nodad;
        }
        a.attributes.push(AddressAttribute::Local(address));
        a.attributes.push(AddressAttribute::Address(address));
        self.request(
            &format!("add address {address}/{prefix}"),
            RouteNetlinkMessage::NewAddress(a),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Adds a route in the main table through link `index`: to `destination`
    /// (default if none), via `gateway` if any (else on the link).
    pub fn add_route(
        &mut self,
        index: u32,
        destination: Option<(IpAddr, u8)>,
        gateway: Option<IpAddr>,
        onlink: bool,
    ) -> Result<()> {
        let mut r = RouteMessage::default();
        let family = destination
            .map(|(a, _)| a)
            .or(gateway)
            .map(|a| family_of(&a))
            .unwrap_or(AddressFamily::Inet);
        r.header.address_family = family;
        r.header.table = netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN;
        r.header.protocol = netlink_packet_route::route::RouteProtocol::Boot;
        r.header.kind = netlink_packet_route::route::RouteType::Unicast;
        r.header.scope = if gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if let Some((address, prefix)) = destination {
            r.header.destination_prefix_length = prefix;
            r.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(address)));
        }
        if let Some(gateway) = gateway {
            r.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
        }
        if onlink {
            r.header.flags = netlink_packet_route::route::RouteFlags::Onlink;
        }
        r.attributes.push(RouteAttribute::Oif(index));
        self.request(
            "add route",
            RouteNetlinkMessage::NewRoute(r),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Everything arriving on link `from` leaves by link `to`, before `from`'s own
    /// network stack sees it. Our filter has a priority of its own ([`PRIORITY`]) on
    /// the link's ingress qdisc (made if there is none; one the engine made is
    /// shared), and replaces one a killed holder left.
    /// With `source`, only frames from that MAC address are redirected (the rest stay
    /// on `from`, which goes nowhere else).
    pub fn redirect(&mut self, from: u32, to: u32, source: Option<[u8; 6]>) -> Result<()> {
        let mut qdisc = TcMessage::with_index(from as i32);
        qdisc.header.parent = TcHandle::INGRESS;
        qdisc.header.handle = INGRESS_HANDLE;
        qdisc.attributes.push(TcAttribute::Kind("ingress".into()));
        match self.request(
            "add an ingress qdisc",
            RouteNetlinkMessage::NewQueueDiscipline(qdisc),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            other => {
                other?;
            }
        }
        self.unredirect(from)?;
        let mut mirror = TcMirror::default();
        let mut generic = TcActionGeneric::default();
        generic.action = TcActionType::Stolen;
        mirror.generic = generic;
        mirror.eaction = TcMirrorActionType::EgressRedir;
        mirror.ifindex = to;
        let mut action = TcAction::default();
        action.tab = 1;
        action.attributes = vec![
            TcActionAttribute::Kind("mirred".into()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
                mirror,
            ))]),
        ];
        // `u32 match u8 0 0`: one key that every packet matches; or the Ethernet
        // source address, 8 to 2 bytes before the network header.
        let mut selector = TcU32Selector::default();
        selector.flags = TcU32SelectorFlags::Terminal;
        selector.keys = match source {
            None => vec![TcU32Key::default()],
            Some(mac) => {
                let mut high = TcU32Key::default();
                high.mask = 0xffff_ffff;
                high.val = u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]);
                high.off = -8;
                let mut low = TcU32Key::default();
                low.mask = 0xffff_0000;
                low.val = u32::from_be_bytes([mac[4], mac[5], 0, 0]);
                low.off = -4;
                vec![high, low]
            }
        };
        selector.nkeys = selector.keys.len() as u8;
        let mut filter = TcMessage::with_index(from as i32);
        filter.header.parent = INGRESS_HANDLE;
        filter.header.info = (u32::from(PRIORITY) << 16) | u32::from(ALL_PROTOCOLS);
        filter.attributes = vec![
            TcAttribute::Kind("u32".into()),
            TcAttribute::Options(vec![
                TcOption::U32(TcFilterU32Option::Selector(selector)),
                TcOption::U32(TcFilterU32Option::Action(vec![action])),
            ]),
        ];
        self.request(
            "add a redirecting filter",
            RouteNetlinkMessage::NewTrafficFilter(filter),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Removes our redirect from link `from` (none there is fine).
    pub fn unredirect(&mut self, from: u32) -> Result<()> {
        let mut filter = TcMessage::with_index(from as i32);
        filter.header.parent = INGRESS_HANDLE;
        filter.header.info = u32::from(PRIORITY) << 16;
        match self.request(
            "remove a redirecting filter",
            RouteNetlinkMessage::DelTrafficFilter(filter),
            NLM_F_ACK,
        ) {
            Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::EINVAL | libc::ENODEV)) => {
                Ok(())
            }
            other => other.map(drop),
        }
    }
}

/// The ingress qdisc's handle, `ffff:`.
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};

/// The priority of nexcage's filters on an ingress qdisc ("NX"), apart from any the
/// engine's plugins add there.
const PRIORITY: u16 = 0x4e58;

fn family_of(address: &IpAddr) -> AddressFamily {
    match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// A link's name, if the message has one.
pub fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}
