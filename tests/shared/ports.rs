//! A port for a server the test starts that cannot bind port 0 and say
//! which it got (`php -S`, redis-server, nginx): free now, and below the
//! kernel's ephemeral range. Such a server binds it a moment (or seconds)
//! later; a port from the ephemeral range can meanwhile become the local
//! end of some other test's outgoing connection, and the bind then fails.
//! Below the range only another listener can take it, and each caller
//! checks that the server it started is the one answering. One copy for
//! `tests/it` and `tests/cluster` (Python's is in
//! `tests/support/cometbox_testing.py`).

use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;

/// A loopback port nothing listens on now, in 10000..(the ephemeral range).
pub fn free_port() -> u16 {
    let low = ephemeral_low();
    for attempt in 0..1000u32 {
        // RandomState's keys are random per process and differ per
        // instance: a random pick without a random-number crate.
        let pick = RandomState::new().hash_one(attempt) % u64::from(low - 10_000);
        let port = 10_000 + pick as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 10000..{low}");
}

/// The first port of the kernel's ephemeral range (32768 when unknown).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .filter(|low| *low > 11_000)
        .unwrap_or(32_768)
}
