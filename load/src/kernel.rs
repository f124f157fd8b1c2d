//! What the kernel says about the network during a window: packets it
//! dropped from its per-CPU input queues (loopback traffic passes through
//! them) and TCP segments it sent again. A lost segment on loopback is
//! resent only after TCP's minimum retransmission timeout (200 ms, then
//! 400 ms), so a latency maximum of that size with drops beside it is the
//! kernel's queue, not the server.

/// Packets dropped from the per-CPU input queues since boot
/// (`/proc/net/softnet_stat`, second column, summed), 0 where unreadable.
pub fn softnet_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter_map(|dropped| u64::from_str_radix(dropped, 16).ok())
        .sum()
}

/// TCP segments retransmitted since boot (`/proc/net/snmp`, `Tcp:
/// RetransSegs`), 0 where unreadable.
pub fn tcp_retransmits() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = snmp.lines().filter(|line| line.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RetransSegs")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// Both counters now, to subtract from a later reading.
#[derive(Clone, Copy)]
pub struct Losses {
    pub drops: u64,
    pub retransmits: u64,
}

impl Losses {
    pub fn now() -> Losses {
        Losses {
            drops: softnet_drops(),
            retransmits: tcp_retransmits(),
        }
    }

    /// What happened since `self`.
    pub fn since(self) -> Losses {
        let now = Losses::now();
        Losses {
            drops: now.drops.saturating_sub(self.drops),
            retransmits: now.retransmits.saturating_sub(self.retransmits),
        }
    }
}

impl std::fmt::Display for Losses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kernel: {} packets dropped from input queues, {} TCP segments resent",
            self.drops, self.retransmits
        )
    }
}
