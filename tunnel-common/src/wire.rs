//! Wire formats: IPv4 outer header, GRE (RFC 2784/2890) flag words and lengths.

/// IP protocol numbers of the encapsulations xtun speaks.
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_IPV6: u8 = 41;
/// IP protocol numbers of what tunnels carry or answer with.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
/// Transparent Ethernet bridging: a GRE payload that is an Ethernet frame.
pub const ETH_P_TEB: u16 = 0x6558;

/// The family of a tunnel's inner packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The EtherType that announces a packet of this family (in an
    /// Ethernet header, or a GRE header's protocol type).
    #[inline(always)]
    pub const fn ether_type(self) -> u16 {
        match self {
            Family::V4 => ETH_P_IP,
            Family::V6 => ETH_P_IPV6,
        }
    }

    /// The family an EtherType announces, if it is one a tunnel carries.
    #[inline(always)]
    pub const fn from_ether_type(ether_type: u16) -> Option<Self> {
        match ether_type {
            ETH_P_IP => Some(Family::V4),
            ETH_P_IPV6 => Some(Family::V6),
            _ => None,
        }
    }
}

pub const ETH_HDR_LEN: usize = 14;
pub const IPV4_HDR_LEN: usize = 20;
pub const IPV6_HDR_LEN: usize = 40;
/// The fixed part of a GRE header: flags/version and protocol type.
pub const GRE_BASE_LEN: usize = 4;
/// The longest GRE header we accept: checksum, key and sequence number.
pub const GRE_MAX_LEN: usize = GRE_BASE_LEN + 12;

/// GRE flag bits in the first 16-bit word (host order).
pub const GRE_CSUM: u16 = 0x8000;
pub const GRE_ROUTING: u16 = 0x4000;
pub const GRE_KEY: u16 = 0x2000;
pub const GRE_SEQ: u16 = 0x1000;
pub const GRE_STRICT: u16 = 0x0800;
pub const GRE_RECUR: u16 = 0x0700;
/// Bits that RFC 2784 reserves (Reserved0 beyond the RFC 1701 bits we reject anyway).
pub const GRE_RESERVED0: u16 = 0x00F8;
pub const GRE_VERSION: u16 = 0x0007;

/// IPv4 flag/fragment word bits (host order).
pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET: u16 = 0x1FFF;

/// ECN code points in the low two bits of the TOS / traffic class.
pub const ECN_MASK: u8 = 0x03;
pub const ECN_NOT_ECT: u8 = 0x00;
pub const ECN_ECT_0: u8 = 0x02;
pub const ECN_CE: u8 = 0x03;

/// The fixed part of a GRE header, as on the wire. Its words are `u16` in
/// network order, so that the data plane reads each with one load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GreHdr {
    /// C, R, K, S, strict-route, recursion, reserved and version bits.
    pub flags_version: u16,
    /// EtherType of the payload.
    pub protocol: u16,
}

impl GreHdr {
    #[inline(always)]
    pub const fn new(flags: u16, protocol: u16) -> Self {
        Self {
            flags_version: flags.to_be(),
            protocol: protocol.to_be(),
        }
    }

    #[inline(always)]
    pub const fn flags(&self) -> u16 {
        u16::from_be(self.flags_version)
    }

    #[inline(always)]
    pub const fn protocol(&self) -> u16 {
        u16::from_be(self.protocol)
    }
}

/// An IPv4 header without options, as its ten 16-bit words in memory
/// order. The data plane reads headers as halfwords: the BPF backend
/// assembles a byte array one byte at a time, and every header we meet
/// starts at an even offset of an even-addressed frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ipv4Words(pub [u16; IPV4_HDR_LEN / 2]);

impl Ipv4Words {
    #[inline(always)]
    const fn word(&self, i: usize) -> u16 {
        u16::from_be(self.0[i])
    }

    #[inline(always)]
    pub const fn version(&self) -> u8 {
        (self.word(0) >> 12) as u8
    }

    /// Header length in bytes, options included.
    #[inline(always)]
    pub const fn header_len(&self) -> usize {
        ((self.word(0) >> 8) & 0x0F) as usize * 4
    }

    #[inline(always)]
    pub const fn tos(&self) -> u8 {
        self.word(0) as u8
    }

    #[inline(always)]
    pub const fn tot_len(&self) -> u16 {
        self.word(1)
    }

    /// Flags and fragment offset.
    #[inline(always)]
    pub const fn frag(&self) -> u16 {
        self.word(3)
    }

    #[inline(always)]
    pub const fn ttl(&self) -> u8 {
        (self.word(4) >> 8) as u8
    }

    #[inline(always)]
    pub const fn proto(&self) -> u8 {
        self.word(4) as u8
    }

    /// Source address, network order (as the maps hold addresses).
    #[inline(always)]
    pub const fn src(&self) -> u32 {
        join_words(self.0[6], self.0[7])
    }

    /// Destination address, network order.
    #[inline(always)]
    pub const fn dst(&self) -> u32 {
        join_words(self.0[8], self.0[9])
    }

    /// One's complement sum of the words; a header with a good checksum
    /// folds to zero. The sum is byte-order independent.
    #[inline(always)]
    pub const fn sum(&self) -> u32 {
        let mut sum = 0u32;
        let mut i = 0;
        while i < self.0.len() {
            sum += self.0[i] as u32;
            i += 1;
        }
        sum
    }
}

/// What a sender chooses in an IPv4 header without options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ipv4Fields {
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    /// Flags and fragment offset.
    pub frag: u16,
    pub ttl: u8,
    pub proto: u8,
    /// Source address, network order.
    pub src: u32,
    /// Destination address, network order.
    pub dst: u32,
}

impl Ipv4Words {
    /// The header without options that carries `f`, its checksum filled in.
    #[inline(always)]
    pub fn from_fields(f: &Ipv4Fields) -> Self {
        let [src_hi, src_lo] = split_words(f.src);
        let [dst_hi, dst_lo] = split_words(f.dst);
        let mut words = [
            u16::from_be_bytes([0x45, f.tos]).to_be(),
            f.tot_len.to_be(),
            f.id.to_be(),
            f.frag.to_be(),
            u16::from_be_bytes([f.ttl, f.proto]).to_be(),
            0,
            src_hi,
            src_lo,
            dst_hi,
            dst_lo,
        ];
        // The sum is byte-order independent: computed over the words as
        // they will sit in memory, it is stored as it came out.
        words[5] = ipv4_header_checksum(&words);
        Ipv4Words(words)
    }
}

/// The `u32` whose memory image is halfword `a` followed by halfword `b`.
#[inline(always)]
pub const fn join_words(a: u16, b: u16) -> u32 {
    let [a0, a1] = a.to_ne_bytes();
    let [b0, b1] = b.to_ne_bytes();
    u32::from_ne_bytes([a0, a1, b0, b1])
}

/// The two halfwords of `v`'s memory image, in memory order.
#[inline(always)]
pub const fn split_words(v: u32) -> [u16; 2] {
    let [a0, a1, b0, b1] = v.to_ne_bytes();
    [u16::from_ne_bytes([a0, a1]), u16::from_ne_bytes([b0, b1])]
}

/// Bytes `b` as the halfwords with the same memory image.
#[inline(always)]
pub const fn words_of<const N: usize, const W: usize>(b: [u8; N]) -> [u16; W] {
    let mut words = [0u16; W];
    let mut i = 0;
    while i < W {
        words[i] = u16::from_ne_bytes([b[2 * i], b[2 * i + 1]]);
        i += 1;
    }
    words
}

/// Halfwords `w` as the bytes of their memory image.
#[inline(always)]
pub const fn bytes_of<const W: usize, const N: usize>(w: [u16; W]) -> [u8; N] {
    let mut bytes = [0u8; N];
    let mut i = 0;
    while i < W {
        let [a, b] = w[i].to_ne_bytes();
        bytes[2 * i] = a;
        bytes[2 * i + 1] = b;
        i += 1;
    }
    bytes
}

/// Why a GRE header is not acceptable for decapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GreError {
    /// Version is not 0 (version 1 is PPTP's enhanced GRE).
    Version,
    /// Routing, strict source route, recursion or reserved bits are set
    /// (RFC 1701 features that RFC 2784 removed and Linux refuses).
    Flags,
}

/// Length of a GRE header with the given flags, options included.
#[inline(always)]
pub const fn gre_header_len(flags: u16) -> usize {
    let mut len = GRE_BASE_LEN;
    if flags & GRE_CSUM != 0 {
        len += 4;
    }
    if flags & GRE_KEY != 0 {
        len += 4;
    }
    if flags & GRE_SEQ != 0 {
        len += 4;
    }
    len
}

/// Checks the flags/version word of a received GRE header and returns the
/// header length on success.
#[inline(always)]
pub const fn gre_parse_flags(flags: u16) -> Result<usize, GreError> {
    if flags & GRE_VERSION != 0 {
        return Err(GreError::Version);
    }
    if flags & (GRE_ROUTING | GRE_STRICT | GRE_RECUR | GRE_RESERVED0) != 0 {
        return Err(GreError::Flags);
    }
    Ok(gre_header_len(flags))
}

/// Offset of the key word inside a GRE header with these flags.
#[inline(always)]
pub const fn gre_key_offset(flags: u16) -> usize {
    if flags & GRE_CSUM != 0 {
        8
    } else {
        4
    }
}

/// Offset of the sequence word inside a GRE header with these flags.
#[inline(always)]
pub const fn gre_seq_offset(flags: u16) -> usize {
    let mut off = GRE_BASE_LEN;
    if flags & GRE_CSUM != 0 {
        off += 4;
    }
    if flags & GRE_KEY != 0 {
        off += 4;
    }
    off
}

/// The IPv4 address embedded in an ISATAP interface identifier
/// (`::0:5efe:a.b.c.d` or `::200:5efe:a.b.c.d`, RFC 5214), if `addr` has one.
#[inline(always)]
pub fn isatap_ipv4(addr: &[u8; 16]) -> Option<[u8; 4]> {
    if addr[8] | 0x02 == 0x02 && addr[9] == 0 && addr[10] == 0x5e && addr[11] == 0xfe {
        Some([addr[12], addr[13], addr[14], addr[15]])
    } else {
        None
    }
}

/// Bytes an encapsulation adds in front of the inner packet.
#[inline(always)]
pub const fn encap_overhead(mode: u8, gre_flags: u16) -> usize {
    match mode {
        crate::maps::MODE_GRE => IPV4_HDR_LEN + gre_header_len(gre_flags),
        // The frame's own Ethernet header travels inside.
        crate::maps::MODE_GRETAP => IPV4_HDR_LEN + gre_header_len(gre_flags) + ETH_HDR_LEN,
        _ => IPV4_HDR_LEN,
    }
}

/// Folds a 32-bit one's complement sum into 16 bits and complements it:
/// the value a checksum field holds (zero for data that checks out).
#[inline(always)]
pub const fn fold_and_complement(mut sum: u32) -> u16 {
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    !(sum as u16)
}

/// Internet checksum of an IPv4 header whose checksum field is zero.
/// `words` are the header's 16-bit words in host order.
#[inline(always)]
pub fn ipv4_header_checksum(words: &[u16; IPV4_HDR_LEN / 2]) -> u16 {
    fold_and_complement(Ipv4Words(*words).sum())
}

/// The outer TOS for an inner TOS, following the kernel's
/// `INET_ECN_encapsulate`: the outer DSCP is `dscp`; the ECN field copies the
/// inner one, except that CE becomes ECT(0) so congestion is not doubled.
#[inline(always)]
pub const fn ecn_encapsulate(dscp: u8, inner_tos: u8) -> u8 {
    let inner_ecn = inner_tos & ECN_MASK;
    let ecn = if inner_ecn == ECN_CE {
        ECN_ECT_0
    } else {
        inner_ecn
    };
    (dscp & !ECN_MASK) | ecn
}

/// What decapsulation does with the inner ECN field, as in RFC 6040 and the
/// kernel's `INET_ECN_decapsulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcnDecap {
    /// Leave the inner header alone.
    Keep,
    /// Mark the inner packet CE.
    SetCe,
    /// Outer says CE but the inner transport is not ECN capable: drop.
    Drop,
}

#[inline(always)]
pub const fn ecn_decapsulate(outer_tos: u8, inner_tos: u8) -> EcnDecap {
    if outer_tos & ECN_MASK != ECN_CE {
        return EcnDecap::Keep;
    }
    match inner_tos & ECN_MASK {
        ECN_NOT_ECT => EcnDecap::Drop,
        ECN_CE => EcnDecap::Keep,
        _ => EcnDecap::SetCe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gre_lengths_cover_every_option_combination() {
        for csum in [false, true] {
            for key in [false, true] {
                for seq in [false, true] {
                    let mut flags = 0;
                    if csum {
                        flags |= GRE_CSUM;
                    }
                    if key {
                        flags |= GRE_KEY;
                    }
                    if seq {
                        flags |= GRE_SEQ;
                    }
                    let expected = 4 + 4 * (csum as usize + key as usize + seq as usize);
                    assert_eq!(gre_header_len(flags), expected);
                    assert_eq!(gre_parse_flags(flags), Ok(expected));
                    assert_eq!(gre_key_offset(flags), if csum { 8 } else { 4 });
                    assert_eq!(
                        gre_seq_offset(flags),
                        4 + 4 * (csum as usize + key as usize)
                    );
                }
            }
        }
    }

    #[test]
    fn isatap_identifiers_embed_ipv4() {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0]);
        a[8..].copy_from_slice(&[0x00, 0x00, 0x5e, 0xfe, 10, 1, 2, 3]);
        assert_eq!(isatap_ipv4(&a), Some([10, 1, 2, 3]));
        a[8] = 0x02;
        assert_eq!(isatap_ipv4(&a), Some([10, 1, 2, 3]));
        a[8] = 0x04;
        assert_eq!(isatap_ipv4(&a), None);
        a[8] = 0;
        a[11] = 0xff;
        assert_eq!(isatap_ipv4(&a), None);
    }

    #[test]
    fn gre_rejects_versions_and_rfc1701_bits() {
        for version in 1..=7u16 {
            assert_eq!(gre_parse_flags(version), Err(GreError::Version));
        }
        for bad in [GRE_ROUTING, GRE_STRICT, 0x0100, 0x0400, 0x0008, 0x0080] {
            assert_eq!(gre_parse_flags(bad | GRE_KEY), Err(GreError::Flags));
        }
    }

    #[test]
    fn ipv4_words_read_the_fields_of_a_real_header() {
        // 45 b8 0054 1234 4000 40 2f csum 0a0a0a02 0a0a1402
        let bytes: [u8; 20] = [
            0x45, 0xb8, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x2f, 0x00, 0x00, 10, 10, 10, 2,
            10, 10, 20, 2,
        ];
        let ip = Ipv4Words(words_of(bytes));
        assert_eq!(ip.version(), 4);
        assert_eq!(ip.header_len(), 20);
        assert_eq!(ip.tos(), 0xb8);
        assert_eq!(ip.tot_len(), 0x54);
        assert_eq!(ip.frag(), IP_DF);
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.proto(), IPPROTO_GRE);
        assert_eq!(ip.src(), u32::from_ne_bytes([10, 10, 10, 2]));
        assert_eq!(ip.dst(), u32::from_ne_bytes([10, 10, 20, 2]));
        let mut with_sum = ip;
        with_sum.0[5] = ipv4_header_checksum(&ip.0);
        assert_eq!(fold_and_complement(with_sum.sum()), 0);
        assert_ne!(fold_and_complement(ip.sum()), 0);
    }

    #[test]
    fn words_and_bytes_round_trip() {
        let b = [1u8, 2, 3, 4, 5, 6];
        let w: [u16; 3] = words_of(b);
        assert_eq!(bytes_of::<3, 6>(w), b);
        let v = u32::from_ne_bytes([9, 8, 7, 6]);
        let [x, y] = split_words(v);
        assert_eq!(join_words(x, y), v);
        assert_eq!(bytes_of::<2, 4>([x, y]), [9, 8, 7, 6]);
        let gre = GreHdr::new(GRE_KEY, ETH_P_IP);
        assert_eq!(
            bytes_of::<2, 4>([gre.flags_version, gre.protocol]),
            [0x20, 0, 8, 0]
        );
        assert_eq!((gre.flags(), gre.protocol()), (GRE_KEY, ETH_P_IP));
    }

    #[test]
    fn ipv4_checksum_matches_a_known_header() {
        // 45 00 00 73 00 00 40 00 40 11 [b8 61] c0 a8 00 01 c0 a8 00 c7
        let words = [
            0x4500, 0x0073, 0x0000, 0x4000, 0x4011, 0x0000, 0xc0a8, 0x0001, 0xc0a8, 0x00c7,
        ];
        assert_eq!(ipv4_header_checksum(&words), 0xb861);
    }

    #[test]
    fn ipv4_header_from_fields_is_the_known_header() {
        // 45 00 00 73 00 00 40 00 40 11 [b8 61] c0 a8 00 01 c0 a8 00 c7
        let bytes: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let ip = Ipv4Words::from_fields(&Ipv4Fields {
            tos: 0,
            tot_len: 0x73,
            id: 0,
            frag: IP_DF,
            ttl: 64,
            proto: IPPROTO_UDP,
            src: u32::from_ne_bytes([0xc0, 0xa8, 0x00, 0x01]),
            dst: u32::from_ne_bytes([0xc0, 0xa8, 0x00, 0xc7]),
        });
        assert_eq!(bytes_of::<10, 20>(ip.0), bytes);
        let with_id = Ipv4Words::from_fields(&Ipv4Fields {
            tos: 0xb8,
            id: 0x1234,
            ..Default::default()
        });
        assert_eq!((with_id.tos(), u16::from_be(with_id.0[2])), (0xb8, 0x1234));
        assert_eq!(fold_and_complement(with_id.sum()), 0);
    }

    #[test]
    fn families_map_to_their_ether_types_and_back() {
        for family in [Family::V4, Family::V6] {
            assert_eq!(Family::from_ether_type(family.ether_type()), Some(family));
        }
        assert_eq!(Family::V4.ether_type(), 0x0800);
        assert_eq!(Family::V6.ether_type(), 0x86DD);
        assert_eq!(Family::from_ether_type(0x0806), None);
    }

    #[test]
    fn overhead_matches_kernel_mtus() {
        assert_eq!(1500 - encap_overhead(crate::maps::MODE_GRE, 0), 1476);
        assert_eq!(1500 - encap_overhead(crate::maps::MODE_GRE, GRE_KEY), 1472);
        assert_eq!(1500 - encap_overhead(crate::maps::MODE_IPIP, 0), 1480);
        assert_eq!(1500 - encap_overhead(crate::maps::MODE_GRETAP, 0), 1462);
        assert_eq!(
            1500 - encap_overhead(crate::maps::MODE_GRETAP, GRE_KEY),
            1458
        );
    }

    #[test]
    fn ecn_follows_rfc6040() {
        assert_eq!(ecn_encapsulate(0xb8, 0x01), 0xb9);
        assert_eq!(ecn_encapsulate(0x00, ECN_CE), ECN_ECT_0);
        assert_eq!(ecn_encapsulate(0x10, 0x00), 0x10);
        assert_eq!(ecn_decapsulate(0x00, ECN_ECT_0), EcnDecap::Keep);
        assert_eq!(ecn_decapsulate(ECN_CE, ECN_ECT_0), EcnDecap::SetCe);
        assert_eq!(ecn_decapsulate(ECN_CE, 0x01), EcnDecap::SetCe);
        assert_eq!(ecn_decapsulate(ECN_CE, ECN_NOT_ECT), EcnDecap::Drop);
        assert_eq!(ecn_decapsulate(ECN_CE, ECN_CE), EcnDecap::Keep);
    }
}
