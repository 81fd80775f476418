//! Other systems (Windows, the BSDs): interfaces are given by address; names need Linux here.

use socket2::Socket;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

fn names_unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "interface names are looked up on Linux only: give the interface's address",
    )
}

/// Interface names are not resolved here.
pub fn index_by_name(_name: &str) -> io::Result<Option<u32>> {
    Err(names_unsupported())
}

/// IPv6 addresses are not mapped to interface indexes here.
pub fn index_by_v6_addr(_addr: Ipv6Addr) -> io::Result<Option<u32>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "IPv6 interfaces are looked up on Linux only",
    ))
}

/// `IP_MULTICAST_ALL` is Linux's; elsewhere a socket gets the groups joined on it (BSD
/// semantics) and there is nothing to turn off.
pub fn only_joined_groups(_s: &Socket, _v6: bool) -> io::Result<()> {
    Ok(())
}

/// Interface names are not resolved here.
pub fn v4_addr_of(_name: &str) -> io::Result<Option<Ipv4Addr>> {
    Err(names_unsupported())
}
