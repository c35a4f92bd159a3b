//! Data-plane counters kept per CPU in the `XTUN_COUNTERS` array, one slot
//! per reason a packet was handled the way it was.

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident = $idx:expr, $label:expr;)+) => {
        $($(#[$doc])* pub const $name: u32 = $idx;)+
        /// Number of slots in the counters array.
        pub const COUNTER_COUNT: u32 = [$($idx),+].len() as u32;
        /// Human names, indexed by counter slot.
        pub const COUNTER_NAMES: [&str; COUNTER_COUNT as usize] = [$($label),+];
    };
}

counters! {
    /// Packets decapsulated by XDP.
    RX_DECAP = 0, "rx_decapsulated";
    /// Not IPv4: passed untouched.
    RX_PASS_NOT_IPV4 = 1, "rx_pass_not_ipv4";
    /// IPv4 but not GRE/IPIP/IPv6-in-IPv4: passed untouched.
    RX_PASS_NOT_TUNNEL = 2, "rx_pass_not_tunnel_proto";
    /// Tunnel protocol, but no configured tunnel matches: passed untouched.
    RX_PASS_NO_TUNNEL = 3, "rx_pass_no_tunnel";
    /// Outer packet is a fragment: passed to the kernel.
    RX_PASS_FRAGMENT = 4, "rx_pass_fragment";
    /// GRE version is not 0.
    RX_BAD_GRE_VERSION = 5, "rx_bad_gre_version";
    /// GRE routing/recursion/reserved bits.
    RX_BAD_GRE_FLAGS = 6, "rx_bad_gre_flags";
    /// Headers shorter than they claim.
    RX_TRUNCATED = 7, "rx_truncated";
    /// GRE payload type we do not carry.
    RX_BAD_PAYLOAD = 8, "rx_bad_payload_type";
    /// Inner header does not match the payload type.
    RX_BAD_INNER = 9, "rx_bad_inner_header";
    /// Outer CE on a not-ECT inner packet (RFC 6040).
    RX_ECN_DROP = 10, "rx_ecn_drop";
    /// bpf_xdp_adjust_head/meta failed.
    RX_ADJUST_FAIL = 11, "rx_adjust_failed";
    /// Decapsulated frames delivered on the tunnel interface by TC.
    RX_DELIVERED = 12, "rx_delivered";
    /// Delivery redirect failed.
    RX_DELIVER_FAIL = 13, "rx_deliver_failed";
    /// Packets encapsulated by TC egress.
    TX_ENCAP = 14, "tx_encapsulated";
    /// Inner packet that the mode cannot carry (e.g. IPv6 in ipip).
    TX_BAD_INNER = 15, "tx_unsupported_inner";
    /// bpf_skb_adjust_room/change_head failed.
    TX_NO_BUFS = 16, "tx_no_bufs";
    /// Redirect to the underlay failed.
    TX_NO_ROUTE = 17, "tx_no_route";
    /// GRE checksum wrong, or present/absent against the tunnel's `icsum`.
    RX_BAD_GRE_CSUM = 18, "rx_bad_gre_checksum";
    /// Outer IPv4 header checksum is wrong: left to the kernel, which drops it.
    RX_BAD_OUTER_CSUM = 19, "rx_bad_outer_ip_checksum";
    /// `iseq` tunnel: sequence number missing or older than the last one.
    RX_OUT_OF_SEQ = 20, "rx_out_of_sequence";
    /// ISATAP: inner source neither matches the outer source nor a listed router.
    RX_ISATAP_SPOOF = 21, "rx_isatap_bad_source";
    /// Multipoint/ISATAP: no neighbour or router for the inner destination.
    TX_NO_NEIGH = 22, "tx_no_neighbour";
    /// `local any`: the route to the remote gives no source address.
    TX_NO_SOURCE = 23, "tx_no_source_address";
    /// A GSO packet on a tunnel with `ocsum` or `oseq`, which need one
    /// header per segment that the kernel's GSO cannot write.
    TX_GSO_UNSUPPORTED = 24, "tx_gso_unsupported";
    /// The route to the remote leads back into a tunnel: dropped, never looped.
    TX_DEAD_LOOP = 25, "tx_dead_loop";
    /// `rpfilter`: an inner IPv6 source the tunnel's routes do not lead back to.
    RX_RPFILTER = 26, "rx_rpfilter";
    /// ICMP "fragmentation needed" for an outer packet a tunnel sent: its
    /// path MTU to that remote was lowered (the ICMP goes on to the kernel).
    RX_ICMP_FRAG_NEEDED = 27, "rx_icmp_frag_needed";
    /// ICMP "fragmentation needed" that changed nothing: it quotes no packet
    /// a tunnel sent (addresses, protocol, key), or its MTU is below the
    /// minimum, not below the packet it quotes, or above the known one.
    RX_ICMP_IGNORED = 28, "rx_icmp_ignored";
    /// An inner packet too big for the path MTU that must not be fragmented:
    /// answered with ICMP "fragmentation needed" / ICMPv6 "packet too big".
    TX_TOO_BIG = 29, "tx_icmp_too_big_sent";
    /// Too big for the path, and no ICMP could be sent back: dropped.
    TX_TOO_BIG_DROP = 30, "tx_too_big_dropped";
    /// Too big for the path but fragmentable (IPv4 without DF): sent as
    /// it is, for the path to fragment if its outer DF allows.
    TX_FRAGMENTABLE = 31, "tx_too_big_fragmentable";
    /// An outer fragment of a tunnel packet, kept until its datagram is
    /// complete (`xtun_defrag`).
    RX_FRAG_QUEUED = 32, "rx_fragments_queued";
    /// A tunnel packet put back together from its outer fragments and
    /// handed on to decapsulation.
    RX_REASSEMBLED = 33, "rx_reassembled";
    /// An incomplete datagram given up after 30 s (`ipfrag_time`), or
    /// one no first fragment had vouched for, displaced by one that had.
    RX_REASM_TIMEOUT = 34, "rx_reassembly_timeouts";
    /// Fragments refused: overlapping, lengths that disagree, a datagram
    /// over 16,000 bytes, or no slot free. An overlap discards its datagram.
    RX_REASM_REFUSED = 35, "rx_reassembly_refused";
    /// A fragment that repeats bytes already in: dropped, its datagram kept.
    RX_FRAG_DUPLICATE = 36, "rx_fragment_duplicates";
    /// ICMP "unreachable" or "time exceeded" about an outer packet a tunnel
    /// sent: counted, not relayed to inner senders (the kernel's tunnels
    /// answer the next ones "host unreachable" for 30 s).
    RX_ICMP_NOT_RELAYED = 37, "rx_icmp_errors_not_relayed";
    /// Forwarded from a LAN into the tunnel by the XDP fast path, past the
    /// tunnel interface (counted on the tunnel).
    TX_FORWARD_XDP = 38, "tx_forwarded_xdp";
    /// Decapsulated and forwarded straight to a LAN by the XDP fast path,
    /// past the tunnel interface (counted on the tunnel).
    RX_FORWARD_XDP = 39, "rx_forwarded_xdp";
    /// Fast path: TTL or hop limit would expire; the kernel answers it.
    FWD_PASS_TTL = 40, "fwd_pass_ttl_expiring";
    /// Fast path: IPv4 options, or an IPv6 hop-by-hop, routing or
    /// destination-options header.
    FWD_PASS_OPTIONS = 41, "fwd_pass_ip_options";
    /// Fast path: a fragment (IPv4, or IPv6 fragment header).
    FWD_PASS_FRAGMENT = 42, "fwd_pass_fragment";
    /// Fast path: multicast or broadcast.
    FWD_PASS_MULTICAST = 43, "fwd_pass_multicast";
    /// Fast path: no complete route answer (unreachable, blackhole,
    /// prohibit, no neighbour, no outer route or egress not attached).
    FWD_PASS_NO_ROUTE = 44, "fwd_pass_no_route";
    /// Fast path: too big for the route's MTU or the tunnel's path MTU;
    /// the kernel fragments it or answers ICMP.
    FWD_PASS_TOO_BIG = 45, "fwd_pass_too_big";
    /// Fast path: the route back to the source does not leave by the
    /// interface it came in by (strict reverse path); the kernel decides
    /// with its rp_filter.
    FWD_PASS_RPFILTER = 46, "fwd_pass_rpfilter";
    /// An inner IPv6 packet whose tunnel encapsulation limit (RFC 2473) is
    /// 0: answered with ICMPv6 Parameter Problem and dropped.
    TX_ENCAP_LIMIT = 47, "tx_encap_limit_exceeded";
    /// Fast path: an address the kernel's input path drops as martian
    /// (IPv4 source 0.0.0.0, in 127/8 or multicast, or the broadcast
    /// address, destination 0.0.0.0; IPv6 source multicast, loopback or
    /// IPv4-mapped, destination loopback); the kernel drops it.
    FWD_PASS_MARTIAN = 48, "fwd_pass_martian";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_slots_are_dense_and_named() {
        assert_eq!(COUNTER_COUNT as usize, COUNTER_NAMES.len());
        assert_eq!(FWD_PASS_MARTIAN + 1, COUNTER_COUNT);
        // The names are indexed by position in the list, the constants by
        // the number written beside them: read both from this file, so a
        // slot numbered out of order or used twice is caught.
        let declared = include_str!("stats.rs").lines().filter_map(|line| {
            let (_, rest) = line.trim().split_once(" = ")?;
            let (idx, label) = rest.split_once(", \"")?;
            Some((idx.parse::<usize>().ok()?, label.strip_suffix("\";")?))
        });
        let mut count = 0;
        for (position, (idx, label)) in declared.enumerate() {
            assert_eq!(idx, position, "{label}");
            assert_eq!(COUNTER_NAMES[position], label);
            count += 1;
        }
        assert_eq!(count, COUNTER_NAMES.len());
        for (i, name) in COUNTER_NAMES.iter().enumerate() {
            assert!(!name.is_empty());
            assert!(!COUNTER_NAMES[..i].contains(name), "{name} is used twice");
        }
    }
}
