//! Fuzzing the input parsers with proptest: the `ip tunnel` grammar, the
//! `apply` TOML file and neighbour prefixes. Whatever the input, they
//! return a value or an error (never panic), what they accept survives a
//! round trip, and file errors point inside the file. Failures proptest
//! finds are kept in `tests/parsers.proptest-regressions` and replayed.

use proptest::{prelude::*, test_runner::FileFailurePersistence};
use tunnel_userspace::{
    config::{Prefix, TunnelSelector, TunnelSpec},
    config6::{Tunnel6Selector, Tunnel6Spec},
    desired,
    grammar::{self, first_match, matches, mode_from_name, parse_c_number, parse_dsfield},
};

/// Seeds of failures found so far, replayed first on every run.
const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/parsers.proptest-regressions"
);

/// Values near their edges, names, and junk: what `ip tunnel add` gets
/// besides its own words.
#[rustfmt::skip]
const OTHER_WORDS: &[&str] = &[
    "t0", "t1", "10.0.0.1", "10.0.0.2", "0.0.0.0", "255.255.255.255", "1.2.3", "0", "1",
    "255", "256", "4294967295", "4294967296", "0x10", "0x11", "inherit/0x10", "inherit/",
    "0x", "-1", "", "/", "a/b", "6rd-prefix", "010", "0x40", "08", "AF41", "EF",
    "inherit/AF41", "d", "ds", "gre5", "isatap0", "vti1",
];

/// Words `ip tunnel add` knows (`TUNNEL_WORDS`), values near their edges,
/// and junk.
fn word() -> impl Strategy<Value = String> {
    let words: Vec<&str> = grammar::TUNNEL_WORDS
        .iter()
        .chain(OTHER_WORDS)
        .copied()
        .collect();
    prop_oneof![
        prop::sample::select(words).prop_map(str::to_string),
        "[ -~]{0,20}",
    ]
}

/// Values `ip -6 tunnel add` takes, near their edges, and junk.
#[rustfmt::skip]
const IPV6_WORDS: &[&str] = &[
    "fd00::1", "fd00::2", "::", "::ffff:10.0.0.1", "10.0.0.1", "fd00::zz", "none", "0xfffff",
    "0x100000", "fffff", "0xff", "0x100", "ff", "ip6gre", "ip6ip6", "ipip6", "ip4ip6", "any",
    "gre/ipv6", "vti6", "encaplimit", "hlim", "tc", "fl", "flowlabel", "tclass", "dscp",
    "allow-localremote", "noallow-localremote",
];

fn word6() -> impl Strategy<Value = String> {
    let words: Vec<&str> = IPV6_WORDS.iter().chain(OTHER_WORDS).copied().collect();
    prop_oneof![prop::sample::select(words).prop_map(str::to_string), word(),]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 5000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn tunnel_words_parse_or_fail_cleanly(words in prop::collection::vec(word(), 0..14)) {
        if let Ok(spec) = TunnelSpec::parse(&words) {
            // What is accepted is whole: the same spec from its own words,
            // a valid interface name, and an MTU within bounds.
            prop_assert_eq!(TunnelSpec::parse(&spec.to_words()).unwrap(), spec.clone());
            prop_assert!(!spec.name.is_empty() && spec.name.len() <= 15);
            let mtu = spec.mtu(1500);
            prop_assert!((1464..=1480).contains(&mtu), "mtu {}", mtu);
            // ... and a change with the same words gives it back.
            prop_assert_eq!(TunnelSpec::parse_change(&spec, &spec.to_words()).unwrap(), spec);
        }
    }

    #[test]
    fn ipv6_tunnel_words_parse_or_fail_cleanly(words in prop::collection::vec(word6(), 0..14)) {
        if let Ok(spec) = Tunnel6Spec::parse(&words) {
            // The same spec from its own words and from the data plane's
            // two halves of it; an MTU the kernel would give.
            prop_assert_eq!(Tunnel6Spec::parse(&spec.to_words()).unwrap(), spec.clone());
            let (cfg, cfg6) = spec.to_config(2, spec.mtu(1500), None);
            let back = Tunnel6Spec::from_config(&spec.name, &cfg, &cfg6, spec.dev.clone());
            prop_assert_eq!(back.as_ref(), Some(&spec));
            let mtu = spec.mtu(1500);
            prop_assert!((1432..=1460).contains(&mtu), "mtu {}", mtu);
            prop_assert_eq!(Tunnel6Spec::parse_change(&spec, &words).unwrap(), spec.clone());
        }
        let _ = Tunnel6Selector::parse(&words);
    }

    #[test]
    fn show_words_parse_or_fail_cleanly(words in prop::collection::vec(word(), 0..8)) {
        let _ = TunnelSelector::parse(&words);
    }

    #[test]
    fn c_numbers_read_back_in_every_notation(n in any::<u32>()) {
        let n = u64::from(n);
        prop_assert_eq!(parse_c_number(&n.to_string()), Some(n));
        prop_assert_eq!(parse_c_number(&format!("{n:#x}")), Some(n));
        prop_assert_eq!(parse_c_number(&format!("{n:#X}").replace("0X", "0x")), Some(n));
        prop_assert_eq!(parse_c_number(&format!("0{n:o}")), Some(n));
        // A digit past the base, or trailing junk, is refused (strtoul
        // stops there, and ip wants the whole word).
        prop_assert_eq!(parse_c_number(&format!("0{n:o}8")), None);
        prop_assert_eq!(parse_c_number(&format!("{n}z")), None);
    }

    #[test]
    fn prefixes_parse_or_fail_cleanly(text in "[0-9a-f:./]{0,45}") {
        if let Ok(p) = text.parse::<Prefix>() {
            prop_assert_eq!(p.to_string().parse::<Prefix>().unwrap(), p);
            let max = if p.addr.is_ipv4() { 32 } else { 128 };
            prop_assert!(p.len <= max, "{} longer than {}", p.len, max);
        }
    }
}

/// A valid file to mutate: the example configuration shipped in the package.
const BASE: &str = include_str!("../../dist/xtun.toml");

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn config_files_parse_or_fail_at_a_place_in_the_file(
        edits in prop::collection::vec((0usize..BASE.len(), 0usize..6, "[ -~\n]{0,8}"), 1..4)
    ) {
        let mut text = BASE.as_bytes().to_vec();
        for (at, cut, insert) in edits {
            let at = at.min(text.len());
            let end = (at + cut).min(text.len());
            text.splice(at..end, insert.bytes());
        }
        let Ok(text) = String::from_utf8(text) else { return Ok(()) };
        match desired::parse("f.toml", &text) {
            Ok(d) => {
                // Accepted files survive export's rendering unchanged.
                prop_assert_eq!(desired::parse("again.toml", &desired::render(&d)).unwrap(), d);
            }
            Err(e) => {
                let lines = text.lines().count().max(1) + 1;
                prop_assert!(e.line >= 1 && e.line <= lines, "line {} of {}: {}", e.line, lines, e);
                prop_assert!(e.column >= 1);
                prop_assert!(e.to_string().starts_with("f.toml:"));
            }
        }
    }
}

/// ip's `matches()`: any non-empty prefix, the first keyword in ip's order.
#[test]
fn keyword_prefixes() {
    for (word, expected) in [
        ("a", Some("add")),
        ("ad", Some("add")),
        ("c", Some("change")),
        ("ch", Some("change")),
        ("d", Some("delete")),
        ("del", Some("delete")),
        ("s", Some("show")),
        ("sh", Some("show")),
        ("l", Some("lst")),
        ("li", Some("list")),
        ("p", Some("prl")),
        ("adds", None),
        ("", None),
        ("x", None),
    ] {
        assert_eq!(
            first_match(word, grammar::TUNNEL_COMMANDS),
            expected,
            "{word:?}"
        );
    }
    assert!(matches("tun", "tunnel") && matches("t", "tunnel") && !matches("tunnels", "tunnel"));
}

/// C literals as strtoul(…, 0) reads them, and the edges of get_u8.
#[test]
fn c_literals() {
    for (text, value) in [
        ("0", Some(0)),
        ("010", Some(8)),
        ("0x40", Some(64)),
        ("0XfF", Some(255)),
        ("+9", Some(9)),
        ("08", None),
        ("0x", None),
        ("1e3", None),
        ("", None),
        ("-1", None),
    ] {
        assert_eq!(parse_c_number(text), value, "{text:?}");
    }
    assert_eq!(grammar::parse_u8("0x100"), None);
    assert_eq!(grammar::parse_u8("0377"), Some(255));
}

/// DSCP names from rt_dsfield (case matters), else hex as ip reads it.
#[test]
fn dscp_names() {
    for (text, value) in [
        ("AF41", Some(0x88)),
        ("AF11", Some(0x28)),
        ("CS6", Some(0xc0)),
        ("EF", Some(0xb8)),
        ("default", Some(0)),
        ("b8", Some(0xb8)),
        ("0x10", Some(0x10)),
        ("10", Some(0x10)),
        ("af41", None),
        ("100", None),
        ("", None),
    ] {
        assert_eq!(parse_dsfield(text), value, "{text:?}");
    }
    assert_eq!(grammar::dsfield_name(0x88), "AF41");
    assert_eq!(grammar::dsfield_name(0x04), "0x04");
    let table = grammar::parse_dsfield_file("# c\n0x0\tdefault\n0x28 AF11 # x\n46 odd\n");
    assert_eq!(
        table,
        [
            (0, "default".to_string()),
            (0x28, "AF11".to_string()),
            (46, "odd".to_string())
        ]
    );
}

/// The mode a name implies, as ip tunnel infers it.
#[test]
fn modes_from_names() {
    for (name, mode) in [
        ("gre5", Some("gre")),
        ("gretap", Some("gre")),
        ("ipip1", Some("ipip")),
        ("sit0", Some("sit")),
        ("isatap0", Some("isatap")),
        ("vti9", Some("vti")),
        ("tun1", None),
        ("ip1", None),
    ] {
        assert_eq!(mode_from_name(name), mode, "{name}");
    }
}
