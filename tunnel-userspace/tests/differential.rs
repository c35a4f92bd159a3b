//! Differential test: a host-side reference model of the accept/decap rules
//! against the real programs under BPF_PROG_TEST_RUN, on generated and
//! mutated frames. Any mismatch fails with the seed that reproduces it
//! (`XTUN_DIFF_SEED=<seed>`). Needs root.

mod common;

use common::*;

const TC_ACT_SHOT: u32 = 2;

/// xorshift64*: small, deterministic, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One configured tunnel: its `tunnel add` words, outer source, IP
/// protocol, GRE key and interface. Every tunnel's local is 10.10.20.2.
type Tunnel = (&'static str, [u8; 4], u8, Option<u32>, u32);

/// The tunnel that expects GRE checksums (`csum`).
const CSUM_TUNNEL: u32 = 15;

#[rustfmt::skip] // a table: one tunnel a line
const TUNNELS: [Tunnel; 5] = [
    ("g mode gre remote 10.10.10.2 local 10.10.20.2", [10, 10, 10, 2], 47, None, 11),
    ("k mode gre remote 10.10.10.3 local 10.10.20.2 key 42", [10, 10, 10, 3], 47, Some(42), 12),
    ("i mode ipip remote 10.10.10.2 local 10.10.20.2", [10, 10, 10, 2], 4, None, 13),
    ("s mode sit remote 10.10.10.2 local 10.10.20.2", [10, 10, 10, 2], 41, None, 14),
    ("c mode gre remote 10.10.10.4 local 10.10.20.2 csum", [10, 10, 10, 4], 47, None, CSUM_TUNNEL),
];

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Pass,
    Drop,
    /// A GRE checksum that does not add up: XDP cannot tell whether it is
    /// pending offload, and leaves the frame whole, tagged, for tc (which
    /// drops it: BPF_PROG_TEST_RUN's skbs have no checksum pending).
    ChecksumInTc,
    /// An outer fragment: XDP hands it to tc (for reassembly), where the
    /// data plane's own filter passes it on.
    FragmentToTc,
    /// Decapsulated: (tunnel ifindex, frame after decapsulation).
    Decap(u32, Vec<u8>),
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn header_checksum_ok(h: &[u8]) -> bool {
    let mut sum: u32 = 0;
    for w in h.chunks(2) {
        sum += u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

/// The rules, written from the kernel's receive path, independently of the
/// eBPF code.
fn model(f: &[u8]) -> Expect {
    if f.len() < 14 || be16(f, 12) != 0x0800 || f.len() < 34 {
        return Expect::Pass;
    }
    let ip = &f[14..];
    let proto = ip[9];
    if ![47, 4, 41].contains(&proto) {
        return Expect::Pass;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 {
        return Expect::Pass;
    }
    // Whatever else is wrong with it: tc's reassembly checks the rest.
    if be16(ip, 6) & 0x3fff != 0 {
        return Expect::FragmentToTc;
    }
    if ip.len() < ihl {
        return Expect::Pass;
    }
    let tot_len = be16(ip, 2) as usize;
    if tot_len < ihl || tot_len > ip.len() || !header_checksum_ok(&ip[..ihl]) {
        return Expect::Pass;
    }
    let (src, dst) = (
        [ip[12], ip[13], ip[14], ip[15]],
        [ip[16], ip[17], ip[18], ip[19]],
    );
    let l4 = &ip[ihl..];
    let (tunnel_len, inner_v6, key) = match proto {
        47 => {
            if l4.len() < 4 {
                return Expect::Pass;
            }
            let flags = be16(l4, 0);
            if flags & 0x0007 != 0 || flags & 0x4ff8 != 0 {
                return Expect::Pass;
            }
            let len = 4 + 4 * [0x8000, 0x2000, 0x1000]
                .iter()
                .filter(|b| flags & **b != 0)
                .count();
            if l4.len() < len {
                return Expect::Pass;
            }
            let key_at = if flags & 0x8000 != 0 { 8 } else { 4 };
            let key = (flags & 0x2000 != 0)
                .then(|| u32::from_be_bytes(l4[key_at..key_at + 4].try_into().unwrap()));
            let v6 = match be16(l4, 2) {
                0x0800 => false,
                0x86dd => true,
                _ => return Expect::Pass,
            };
            (len, v6, key)
        }
        4 => (0, false, None),
        _ => (0, true, None),
    };
    if dst != [10, 10, 20, 2] {
        return Expect::Pass;
    }
    let Some(&(_, _, _, _, ifindex)) = TUNNELS
        .iter()
        .find(|t| t.1 == src && t.2 == proto && t.3 == key)
    else {
        return Expect::Pass;
    };
    if proto == 47 {
        // As ip_tunnel_rcv: the C bit must be what the tunnel expects, and
        // the checksum must cover the GRE header and payload.
        let has_csum = be16(l4, 0) & 0x8000 != 0;
        if has_csum != (ifindex == CSUM_TUNNEL) {
            return Expect::Drop;
        }
        if has_csum && !header_checksum_ok(&l4[..tot_len - ihl]) {
            return Expect::ChecksumInTc;
        }
    }
    let inner_at = 14 + ihl + tunnel_len;
    let mut out = f[..12].to_vec();
    out.extend_from_slice(&(if inner_v6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes());
    out.extend_from_slice(&f[inner_at..]);
    let outer_ce = ip[1] & 3 == 3;
    let inner = &mut out[14..];
    if inner_v6 {
        if inner.len() < 40 || inner[0] >> 4 != 6 {
            return Expect::Drop;
        }
        let ecn = (inner[1] >> 4) & 3;
        if outer_ce {
            if ecn == 0 {
                return Expect::Drop;
            }
            inner[1] |= 0x30;
        }
    } else {
        if inner.len() < 20 || inner[0] >> 4 != 4 {
            return Expect::Drop;
        }
        if outer_ce {
            if inner[1] & 3 == 0 {
                return Expect::Drop;
            }
            if inner[1] & 3 != 3 {
                // CE, with the header checksum updated incrementally
                // (RFC 1624), as a router would.
                let before = u16::from_be_bytes([inner[0], inner[1]]);
                inner[1] |= 3;
                let after = u16::from_be_bytes([inner[0], inner[1]]);
                let old = u16::from_be_bytes([inner[10], inner[11]]);
                let mut sum = (!old as u32) + (!before as u32) + after as u32;
                while sum > 0xffff {
                    sum = (sum & 0xffff) + (sum >> 16);
                }
                inner[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
            }
        }
    }
    Expect::Decap(ifindex, out)
}

fn inner_v6() -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64).udp(1000, 2000);
    let mut out = Vec::new();
    builder.write(&mut out, &[7u8; 40]).unwrap();
    out
}

/// A GRE header with a valid checksum over itself and `inner`.
fn gre_with_checksum(inner: &[u8]) -> Vec<u8> {
    let mut gre = vec![0x80, 0, 0x08, 0, 0, 0, 0, 0];
    let mut sum: u32 = gre
        .iter()
        .chain(inner)
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|w| u16::from_be_bytes([*w[0], w.get(1).map_or(0, |b| **b)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    gre[4..6].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    gre
}

/// A valid frame for one of the tunnels (or a near miss), then mutated.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let v4 = inner_packet([0u8, 1, 2, 3][rng.below(4)]);
    let v6 = inner_v6();
    let case = rng.below(7);
    let mut f = match case {
        0 => frame(47, &[0, 0, 8, 0], &v4, 0),
        1 => frame(
            47,
            &[0x20, 0, 8, 0, 0, 0, 0, [42, 43, 0][rng.below(3)]],
            &v4,
            0,
        ),
        2 => frame(47, &[0, 0, 0x86, 0xdd], &v6, 0),
        3 => frame(4, &[], &v4, 0),
        4 => frame(41, &[], &v6, 0),
        5 => frame(47, &[0x30, 0, 8, 0, 0, 0, 0, 42, 0, 0, 0, 9], &v4, 0),
        _ => frame(47, &gre_with_checksum(&v4), &v4, 0),
    };
    // The key-42 tunnel's remote is 10.10.10.3, the csum tunnel's .4.
    if rng.below(2) == 0 {
        f[14 + 15] = if case == 6 { 4 } else { 3 };
    }
    // Outer ECN, sometimes CE.
    f[15] = (f[15] & !3) | rng.below(4) as u8;
    let mutations = rng.below(4);
    for _ in 0..mutations {
        match rng.below(5) {
            0 => {
                let at = rng.below(f.len());
                f[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(f.len().min(80));
                f[at] = rng.next() as u8;
            }
            2 => {
                let len = 14 + rng.below(f.len() - 13);
                f.truncate(len);
            }
            3 => {
                let n = rng.below(32);
                f.extend((0..n).map(|_| rng.next() as u8));
            }
            _ => {
                // Outer header fields that steer the parser.
                if f.len() >= 34 {
                    match rng.below(4) {
                        0 => f[14] = 0x40 | (5 + rng.below(11)) as u8,
                        1 => f[14 + 9] = [47, 4, 41, 17][rng.below(4)],
                        2 => f[14 + 6] = [0, 0x20, 0x40, 0x01][rng.below(4)],
                        _ => {
                            let len = (f.len() - 14) as u16 + rng.below(9) as u16 - 4;
                            f[16..18].copy_from_slice(&len.to_be_bytes());
                        }
                    }
                }
            }
        }
    }
    // Mostly keep the outer checksum right, so the deeper rules get exercised.
    if rng.below(8) != 0 {
        fix_outer_checksum(&mut f);
    }
    f
}

#[test]
fn programs_agree_with_the_reference_model() {
    let seed: u64 = std::env::var("XTUN_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let count: usize = std::env::var("XTUN_DIFF_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let mut h = Harness::new();
    for (args, _, _, _, ifindex) in TUNNELS {
        h.add(args, ifindex);
    }
    let mut rng = Rng(seed);
    let (mut decapsulated, mut passed, mut dropped, mut tc_checked) = (0, 0, 0, 0);
    for n in 0..count {
        let f = generate(&mut rng);
        let expected = model(&f);
        let (verdict, out) = h.xdp(&f);
        let ctx = format!("seed {seed}, packet {n}: {:02x?}", f);
        match &expected {
            Expect::Pass => {
                assert_eq!((verdict, &out), (XDP_PASS, &f), "XDP pass, {ctx}");
                passed += 1;
            }
            Expect::Drop => {
                assert_eq!(verdict, XDP_DROP, "XDP drop, {ctx}");
                dropped += 1;
            }
            Expect::ChecksumInTc | Expect::FragmentToTc => {
                let mut tagged = checksum_in_tc_tag();
                tagged.extend_from_slice(&f);
                assert_eq!((verdict, &out), (XDP_PASS, &tagged), "XDP defer, {ctx}");
                dropped += 1;
            }
            Expect::Decap(ifindex, frame) => {
                let mut tagged = h.tag(*ifindex);
                tagged.extend_from_slice(frame);
                assert_eq!((verdict, &out), (XDP_PASS, &tagged), "XDP decap, {ctx}");
                decapsulated += 1;
            }
        }
        // The same rules in tc (BPF_PROG_TEST_RUN needs Ethernet + IPv4).
        if f.len() >= 34 && n % 4 == 0 {
            let (verdict, out) = h.tc(&f);
            match &expected {
                Expect::Pass | Expect::FragmentToTc => {
                    assert_eq!((verdict, &out), (TC_ACT_UNSPEC, &f), "tc pass, {ctx}")
                }
                Expect::Drop | Expect::ChecksumInTc => {
                    assert_eq!(verdict, TC_ACT_SHOT, "tc drop, {ctx}")
                }
                Expect::Decap(_, frame) => {
                    assert_eq!((verdict, &out), (TC_ACT_REDIRECT, frame), "tc decap, {ctx}")
                }
            }
            tc_checked += 1;
        }
    }
    eprintln!(
        "differential: seed {seed}: {count} frames through XDP ({decapsulated} decapsulated, {passed} passed, {dropped} dropped), {tc_checked} through tc, 0 mismatches"
    );
    assert!(
        decapsulated > count / 20 && passed > count / 20,
        "the generator covers both outcomes"
    );
}
