//! Linux: interface names and indexes from /sys and /proc, an interface's IPv4 address from
//! `getifaddrs` (the crate's only `unsafe`), and `IP_MULTICAST_ALL` off.
#![allow(unsafe_code)]

use socket2::Socket;
use std::ffi::CStr;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The index of the interface called `name`, from `/sys/class/net/NAME/ifindex`; `None` if
/// there is no such interface.
pub fn index_by_name(name: &str) -> io::Result<Option<u32>> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Ok(None);
    }
    match std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The index of the interface that holds the IPv6 address `addr`, from `/proc/net/if_inet6`
/// (one line per address: 32 hex digits, index, prefix length, scope, flags, name).
pub fn index_by_v6_addr(addr: Ipv6Addr) -> io::Result<Option<u32>> {
    let table = match std::fs::read_to_string("/proc/net/if_inet6") {
        Ok(t) => t,
        // No IPv6 in this kernel: no interface has the address.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let want = format!("{:032x}", u128::from(addr));
    Ok(table.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        (f.next()? == want)
            .then(|| u32::from_str_radix(f.next()?, 16).ok())
            .flatten()
    }))
}

/// `IP_MULTICAST_ALL` / `IPV6_MULTICAST_ALL` off: Linux otherwise hands a socket bound to a
/// wildcard address the datagrams of every group any socket on the host joined on that port.
pub fn only_joined_groups(s: &Socket, v6: bool) -> io::Result<()> {
    if v6 {
        s.set_multicast_all_v6(false)
    } else {
        s.set_multicast_all_v4(false)
    }
}

/// The first IPv4 address of the interface called `name`, from `getifaddrs(3)`; `None` if it
/// has none. (The kernel's own choice for a socket bound to the device is no answer: for `lo`
/// it picks another interface's address, 127.0.0.1 having host scope.)
pub fn v4_addr_of(name: &str) -> io::Result<Option<Ipv4Addr>> {
    /// Owns the list `getifaddrs` returns; dropping it frees the list.
    struct IfAddrs(*mut libc::ifaddrs);
    impl Drop for IfAddrs {
        fn drop(&mut self) {
            // SAFETY: the pointer came from a successful getifaddrs and is freed once, here.
            unsafe { libc::freeifaddrs(self.0) }
        }
    }
    let mut head = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `head`, which we own from then on.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let list = IfAddrs(head);
    let mut cur = list.0;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list `list` owns, alive until `list` drops.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr of the list.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if i32::from(family) != libc::AF_INET {
            continue;
        }
        // SAFETY: ifa_name is a non-null, NUL-terminated string of the list.
        let ifname = unsafe { CStr::from_ptr(ifa.ifa_name) };
        if ifname.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: sa_family is AF_INET, so the sockaddr is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        return Ok(Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
    }
    Ok(None)
}
