//! Sockets for the tools: which interface an `--iface` names, a sender's multicast and
//! broadcast options, a receiver's bind and group membership — every option through socket2.

use crate::error::{usage, Result, UdpError};
use crate::sys;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// An interface as the user names it: by one of its addresses, by name (`lo`, `eth0`; Linux
/// only), or by index (`3`; what IPv6 wants, and the portable way to name one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfaceSpec {
    /// An address the interface holds.
    Addr(IpAddr),
    /// The interface index (`ip link` lists them).
    Index(u32),
    /// The interface name.
    Name(String),
}

impl FromStr for IfaceSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.is_empty() {
            return Err("an empty interface: give an address, a name or an index".into());
        }
        if let Ok(a) = s.parse() {
            return Ok(IfaceSpec::Addr(a));
        }
        if let Ok(i) = s.parse() {
            return Ok(IfaceSpec::Index(i));
        }
        Ok(IfaceSpec::Name(s.to_string()))
    }
}

impl fmt::Display for IfaceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IfaceSpec::Addr(a) => write!(f, "{a}"),
            IfaceSpec::Index(i) => write!(f, "index {i}"),
            IfaceSpec::Name(n) => f.write_str(n),
        }
    }
}

/// An IPv4 interface, resolved: the address `IP_MULTICAST_IF` and source-specific joins take
/// (socket2 sets `IP_MULTICAST_IF` by address only), and for one given by name (Linux) its
/// index too, which the join uses (an `ip_mreqn`): an address can be on several interfaces,
/// an index cannot.
#[derive(Clone, Debug)]
pub(crate) struct V4Iface {
    pub addr: Ipv4Addr,
    pub index: Option<u32>,
}

fn no_interface_named(name: &str) -> UdpError {
    UdpError::Usage(format!(
        "--iface {name}: no interface has this name (see `ip link`)"
    ))
}

fn check_local_v4(addr: Ipv4Addr) -> Result<()> {
    // Binding to an address succeeds exactly when an interface holds it.
    match UdpSocket::bind((addr, 0)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => usage(format!(
            "--iface {addr}: no interface has this address (see `ip addr`)"
        )),
        Err(e) => Err(UdpError::Io {
            what: format!("--iface {addr}"),
            source: e,
        }),
    }
}

/// Resolves `--iface` for an IPv4 group.
pub(crate) fn resolve_v4(spec: &IfaceSpec) -> Result<V4Iface> {
    match spec {
        IfaceSpec::Addr(IpAddr::V4(a)) => {
            check_local_v4(*a)?;
            Ok(V4Iface {
                addr: *a,
                index: None,
            })
        }
        IfaceSpec::Addr(IpAddr::V6(a)) => usage(format!(
            "--iface {a} is an IPv6 address but the destination is IPv4: give the interface's \
             IPv4 address or its name"
        )),
        IfaceSpec::Index(i) => usage(format!(
            "--iface {i}: IPv4 multicast names its interface by address or by name, not by index"
        )),
        IfaceSpec::Name(name) => {
            let index = sys::index_by_name(name)
                .map_err(UdpError::io(format!("--iface {name}")))?
                .ok_or_else(|| no_interface_named(name))?;
            let addr = sys::v4_addr_of(name)
                .map_err(UdpError::io(format!("--iface {name}: its IPv4 address")))?
                .ok_or_else(|| {
                    UdpError::Usage(format!(
                        "--iface {name}: this interface has no IPv4 address"
                    ))
                })?;
            Ok(V4Iface {
                addr,
                index: Some(index),
            })
        }
    }
}

/// Resolves `--iface` for an IPv6 group: IPv6 names interfaces by index only.
pub(crate) fn resolve_v6(spec: &IfaceSpec) -> Result<u32> {
    match spec {
        IfaceSpec::Index(i) => Ok(*i),
        IfaceSpec::Name(name) => sys::index_by_name(name)
            .map_err(UdpError::io(format!("--iface {name}")))?
            .ok_or_else(|| no_interface_named(name)),
        IfaceSpec::Addr(IpAddr::V6(a)) => sys::index_by_v6_addr(*a)
            .map_err(UdpError::io(format!("--iface {a}")))?
            .ok_or_else(|| {
                UdpError::Usage(format!(
                    "--iface {a}: no interface has this address (see `ip -6 addr`)"
                ))
            }),
        IfaceSpec::Addr(IpAddr::V4(a)) => usage(format!(
            "--iface {a} is an IPv4 address but the group is IPv6: give the interface's name, \
             index or IPv6 address"
        )),
    }
}

/// Refuses an address that is not a multicast group, in one line.
pub(crate) fn check_group(group: IpAddr) -> Result<()> {
    if group.is_multicast() {
        Ok(())
    } else {
        usage(format!(
            "{group} is not a multicast address (IPv4: 224.0.0.0/4, IPv6: ff00::/8)"
        ))
    }
}

/// IPv6 groups of interface-local (ff01::/16) and link-local (ff02::/16) scope exist once per
/// link: without an interface the kernel would pick one by routing, which is rarely the one
/// meant.
pub(crate) fn check_scope(group: IpAddr, iface: Option<&IfaceSpec>) -> Result<()> {
    if let (IpAddr::V6(g), None) = (group, iface) {
        let scope = g.segments()[0] & 0x000f;
        if scope == 1 || scope == 2 {
            return usage(format!(
                "{g} is a link-local (or interface-local) group: name the interface with --iface"
            ));
        }
    }
    Ok(())
}

fn domain_of(addr: &SocketAddr) -> Domain {
    if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

/// What the sender sets on its socket beyond the destination.
#[derive(Clone, Debug, Default)]
pub struct SendOptions {
    /// Multicast: `IP_MULTICAST_TTL` / `IPV6_MULTICAST_HOPS` (default 1: this link only);
    /// unicast: `IP_TTL` / `IPV6_UNICAST_HOPS` (default: the system's).
    pub ttl: Option<u32>,
    /// Multicast: `IP_MULTICAST_LOOP` / `IPV6_MULTICAST_LOOP` on, so receivers on this host
    /// get the datagrams too (off by default here).
    pub multicast_loop: bool,
    /// Multicast: the outgoing interface (`IP_MULTICAST_IF` by address, `IPV6_MULTICAST_IF`
    /// by index).
    pub iface: Option<IfaceSpec>,
    /// `SO_BROADCAST`: without it the kernel refuses to send to a broadcast address (EACCES).
    pub broadcast: bool,
}

/// A socket ready to send to `to`, with `opts` applied (and refused where they do not apply).
pub(crate) fn sender_socket(to: SocketAddr, opts: &SendOptions) -> Result<UdpSocket> {
    let s = Socket::new(domain_of(&to), Type::DGRAM, Some(Protocol::UDP))
        .map_err(UdpError::io("create a UDP socket"))?;
    let ip = to.ip();
    if opts.broadcast {
        if ip.is_ipv6() {
            return usage(
                "--broadcast: IPv6 has no broadcast; send to a multicast group such as ff02::1",
            );
        }
        s.set_broadcast(true)
            .map_err(UdpError::io("set SO_BROADCAST"))?;
    }
    if ip.is_multicast() {
        check_scope(ip, opts.iface.as_ref())?;
        let ttl = opts.ttl.unwrap_or(1);
        match ip {
            IpAddr::V4(_) => {
                s.set_multicast_ttl_v4(ttl)
                    .map_err(UdpError::io("set IP_MULTICAST_TTL"))?;
                s.set_multicast_loop_v4(opts.multicast_loop)
                    .map_err(UdpError::io("set IP_MULTICAST_LOOP"))?;
                if let Some(spec) = &opts.iface {
                    let iface = resolve_v4(spec)?;
                    s.set_multicast_if_v4(&iface.addr)
                        .map_err(UdpError::io(format!("set IP_MULTICAST_IF to {spec}")))?;
                }
            }
            IpAddr::V6(_) => {
                s.set_multicast_hops_v6(ttl)
                    .map_err(UdpError::io("set IPV6_MULTICAST_HOPS"))?;
                s.set_multicast_loop_v6(opts.multicast_loop)
                    .map_err(UdpError::io("set IPV6_MULTICAST_LOOP"))?;
                if let Some(spec) = &opts.iface {
                    let index = resolve_v6(spec)?;
                    s.set_multicast_if_v6(index)
                        .map_err(UdpError::io(format!("set IPV6_MULTICAST_IF to {spec}")))?;
                }
            }
        }
    } else {
        if opts.multicast_loop || opts.iface.is_some() {
            return usage(format!(
                "--loop and --iface apply to multicast destinations, and {ip} is not one"
            ));
        }
        if let Some(ttl) = opts.ttl {
            match ip {
                IpAddr::V4(_) => s.set_ttl(ttl),
                IpAddr::V6(_) => s.set_unicast_hops_v6(ttl),
            }
            .map_err(UdpError::io("set the TTL"))?;
        }
    }
    Ok(s.into())
}

/// The one line for a failed send. EACCES on an unconnected UDP socket means the destination
/// is a broadcast address and `SO_BROADCAST` is off: say so, and what to add.
pub(crate) fn send_error(to: SocketAddr, broadcast: bool, e: io::Error) -> UdpError {
    if e.kind() == io::ErrorKind::PermissionDenied && !broadcast {
        return UdpError::Usage(format!(
            "{} is a broadcast address: add --broadcast (the kernel refuses broadcast without \
             SO_BROADCAST: EACCES)",
            to.ip()
        ));
    }
    UdpError::Io {
        what: format!("send to {to}"),
        source: e,
    }
}

/// Where and how a receiver listens.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// The address to bind. With a group, its IP must be the wildcard or the group itself
    /// (the port is what matters).
    pub listen: SocketAddr,
    /// The multicast group to join.
    pub group: Option<IpAddr>,
    /// The interface to join the group on (default: the one the kernel routes the group to).
    pub iface: Option<IfaceSpec>,
    /// Source-specific membership (`IP_ADD_SOURCE_MEMBERSHIP`): only this sender's datagrams.
    pub source: Option<IpAddr>,
}

/// A bound socket, joined to the group if there is one, and a line that says what it
/// listens to.
pub(crate) fn receiver_socket(opts: &ListenOptions) -> Result<(UdpSocket, String)> {
    let Some(group) = opts.group else {
        if opts.iface.is_some() || opts.source.is_some() {
            return usage("--iface and --source need --multicast GROUP");
        }
        // A unicast receiver wants no group's datagrams, even if another socket on this host
        // joined one on the same port.
        let s: UdpSocket = bound_socket(opts.listen)?.into();
        let local = s.local_addr().map_err(UdpError::io("local address"))?;
        return Ok((s, format!("listening on {local}")));
    };
    check_group(group)?;
    check_scope(group, opts.iface.as_ref())?;
    // Several receivers on one host share the group's port.
    let s = bound_socket(group_bind_addr(opts, group)?)?;
    let on = match &opts.iface {
        Some(spec) => format!(" on {spec}"),
        None => String::new(),
    };
    join(&s, group, opts, &on)?;
    let s: UdpSocket = s.into();
    let local = s.local_addr().map_err(UdpError::io("local address"))?;
    let from = match opts.source {
        Some(src) => format!(" from {src}"),
        None => String::new(),
    };
    Ok((s, format!("listening on {local}, joined {group}{on}{from}")))
}

/// A UDP socket bound to `addr` with `SO_REUSEADDR` (receivers share a port), that gets no
/// datagram of a group it did not join itself.
fn bound_socket(addr: SocketAddr) -> Result<Socket> {
    let s = Socket::new(domain_of(&addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(UdpError::io("create a UDP socket"))?;
    s.set_reuse_address(true)
        .map_err(UdpError::io("set SO_REUSEADDR"))?;
    sys::only_joined_groups(&s, addr.is_ipv6())
        .map_err(UdpError::io("turn IP_MULTICAST_ALL off"))?;
    bind(&s, addr)?;
    Ok(s)
}

/// Where a receiver of `group` binds: the wildcard of the group's family at `--listen`'s port
/// (`--listen` may name the wildcard or the group itself, nothing else).
fn group_bind_addr(opts: &ListenOptions, group: IpAddr) -> Result<SocketAddr> {
    let listen_ip = opts.listen.ip();
    let bind_ip = if listen_ip.is_unspecified() && listen_ip.is_ipv4() == group.is_ipv4() {
        listen_ip
    } else if listen_ip == group || listen_ip.is_unspecified() {
        match group {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        }
    } else {
        return usage(format!(
            "--listen {}: with --multicast the address must be the wildcard (0.0.0.0 or [::]); \
             only its port is used",
            opts.listen
        ));
    };
    Ok(SocketAddr::new(bind_ip, opts.listen.port()))
}

/// Joins `s` to `group` (source-specific with `--source`) on `--iface` or the kernel's
/// choice; `on` names the interface in an error.
fn join(s: &Socket, group: IpAddr, opts: &ListenOptions, on: &str) -> Result<()> {
    let joined = |e: io::Error| join_error(group, on, e);
    match (group, opts.source) {
        (IpAddr::V4(g), None) => match &opts.iface {
            None => s.join_multicast_v4(&g, &Ipv4Addr::UNSPECIFIED),
            Some(spec) => match resolve_v4(spec)? {
                V4Iface {
                    index: Some(index), ..
                } => s.join_multicast_v4_n(&g, &InterfaceIndexOrAddress::Index(index)),
                V4Iface { addr, .. } => s.join_multicast_v4(&g, &addr),
            },
        }
        .map_err(joined),
        (IpAddr::V4(g), Some(IpAddr::V4(src))) => {
            let iface = match &opts.iface {
                Some(spec) => resolve_v4(spec)?.addr,
                None => Ipv4Addr::UNSPECIFIED,
            };
            s.join_ssm_v4(&src, &g, &iface).map_err(joined)
        }
        (IpAddr::V4(_), Some(src)) => {
            usage(format!("--source {src} is IPv6 but the group is IPv4"))
        }
        (IpAddr::V6(_), Some(_)) => usage(
            "--source: source-specific membership is IPv4 only here \
             (IP_ADD_SOURCE_MEMBERSHIP; socket2 has no MCAST_JOIN_SOURCE_GROUP)",
        ),
        (IpAddr::V6(g), None) => {
            let index = match &opts.iface {
                Some(spec) => resolve_v6(spec)?,
                None => 0,
            };
            s.join_multicast_v6(&g, index).map_err(joined)
        }
    }
}

fn bind(s: &Socket, addr: SocketAddr) -> Result<()> {
    s.bind(&addr.into())
        .map_err(UdpError::io(format!("bind {addr}")))
}

fn join_error(group: IpAddr, on: &str, e: io::Error) -> UdpError {
    // ENODEV: the kernel found no interface to join on (an address nobody holds, or no
    // multicast route when no interface was named).
    if e.raw_os_error() == Some(19) && cfg!(target_os = "linux") {
        return UdpError::Usage(format!(
            "join {group}{on}: no such interface (or no route for the group: name one with \
             --iface)"
        ));
    }
    UdpError::Io {
        what: format!("join {group}{on}"),
        source: e,
    }
}

/// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`): the send time in every header, and
/// the receive time it is compared with (see [`crate::Header`] for why this clock).
pub fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A random 64-bit number (for run ids and nonces), from std's randomly keyed hasher: no
/// dependency for a value that only has to differ between runs.
pub(crate) fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u64(realtime_ns());
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iface_specs_parse_as_address_index_or_name() {
        assert_eq!(
            "127.0.0.1".parse::<IfaceSpec>().unwrap(),
            IfaceSpec::Addr("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            "fe80::1".parse::<IfaceSpec>().unwrap(),
            IfaceSpec::Addr("fe80::1".parse().unwrap())
        );
        assert_eq!("3".parse::<IfaceSpec>().unwrap(), IfaceSpec::Index(3));
        assert_eq!(
            "eth0".parse::<IfaceSpec>().unwrap(),
            IfaceSpec::Name("eth0".into())
        );
        assert!("".parse::<IfaceSpec>().is_err());
    }

    #[test]
    fn a_unicast_group_is_refused_in_one_line() {
        let e = check_group("10.0.0.1".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "10.0.0.1 is not a multicast address (IPv4: 224.0.0.0/4, IPv6: ff00::/8)"
        );
        assert!(check_group("239.1.2.3".parse().unwrap()).is_ok());
        assert!(check_group("ff0e::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn link_local_ipv6_groups_need_an_interface() {
        let g: IpAddr = "ff02::1:3".parse().unwrap();
        assert!(check_scope(g, None)
            .unwrap_err()
            .to_string()
            .contains("--iface"));
        assert!(check_scope(g, Some(&IfaceSpec::Index(1))).is_ok());
        assert!(check_scope("ff0e::1".parse().unwrap(), None).is_ok());
        assert!(check_scope("239.1.2.3".parse().unwrap(), None).is_ok());
    }

    #[test]
    fn mismatched_families_are_refused() {
        let e = resolve_v6(&IfaceSpec::Addr("127.0.0.1".parse().unwrap())).unwrap_err();
        assert!(
            e.to_string().contains("IPv4 address but the group is IPv6"),
            "{e}"
        );
        let e = resolve_v4(&IfaceSpec::Index(1)).unwrap_err();
        assert!(e.to_string().contains("not by index"), "{e}");
    }

    #[test]
    fn options_that_need_multicast_are_refused_for_unicast() {
        let opts = SendOptions {
            multicast_loop: true,
            ..SendOptions::default()
        };
        let e = sender_socket("127.0.0.1:9".parse().unwrap(), &opts).unwrap_err();
        assert!(e.to_string().contains("apply to multicast"), "{e}");
        let opts = SendOptions {
            broadcast: true,
            ..SendOptions::default()
        };
        let e = sender_socket("[::1]:9".parse().unwrap(), &opts).unwrap_err();
        assert!(e.to_string().contains("IPv6 has no broadcast"), "{e}");
    }

    #[test]
    fn eacces_without_broadcast_explains_itself() {
        let e = send_error(
            "10.1.2.255:9".parse().unwrap(),
            false,
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(
            e.to_string(),
            "10.1.2.255 is a broadcast address: add --broadcast (the kernel refuses broadcast \
             without SO_BROADCAST: EACCES)"
        );
    }
}
