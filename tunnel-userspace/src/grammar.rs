//! What `ip` itself does with words before a tunnel is described: keyword
//! prefixes (iproute2's `matches()`), numbers in C notation (`strtoul` with
//! base 0), DSCP names (`/etc/iproute2/rt_dsfield`), the tunnel mode a name
//! implies, and errors worded and numbered as `ip` words and numbers them.

use std::{fmt, sync::OnceLock};

/// Is `word` a non-empty prefix of `keyword`? (`a` is `add`, `sh` is `show`.)
pub fn matches(word: &str, keyword: &str) -> bool {
    !word.is_empty() && keyword.starts_with(word)
}

/// The first keyword of `table` that `word` abbreviates: iproute2 tries its
/// keywords in a fixed order, so `d` is `delete` and `s` is `show`.
pub fn first_match<'a>(word: &str, table: &[&'a str]) -> Option<&'a str> {
    table.iter().copied().find(|k| matches(word, k))
}

/// A number as C's `strtoul(s, _, 0)` reads it when it must take the whole
/// string: `0x2a` hex, `052` octal, `42` decimal, an optional `+`.
pub fn parse_c_number(s: &str) -> Option<u64> {
    parse_radix(s, 0)
}

/// `strtoul(s, _, radix)` over the whole string (radix 0: C notation; 16
/// also takes a `0x` prefix, as strtoul does). Leading blanks and a sign are
/// allowed; a minus is only accepted on zero (strtoul would wrap the rest
/// to a value no caller accepts).
fn parse_radix(s: &str, radix: u32) -> Option<u64> {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, s) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let (digits, radix) = match radix {
        0 => match hex_prefix(s) {
            Some(rest) => (rest, 16),
            None if s.len() > 1 && s.starts_with('0') => (&s[1..], 8),
            None => (s, 10),
        },
        16 => (hex_prefix(s).unwrap_or(s), 16),
        r => (s, r),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let value = u64::from_str_radix(digits, radix).ok()?;
    (!negative || value == 0).then_some(value)
}

/// What follows a `0x` that strtoul takes as the hex prefix.
fn hex_prefix(s: &str) -> Option<&str> {
    let rest = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    rest.starts_with(|c: char| c.is_ascii_hexdigit())
        .then_some(rest)
}

/// `get_u8(_, s, 0)`.
pub fn parse_u8(s: &str) -> Option<u8> {
    parse_c_number(s).and_then(|v| u8::try_from(v).ok())
}

/// `strtoul(s, _, 16)` over the whole string: hex with or without `0x`
/// (`get_u8(_, s, 16)`, `get_u32(_, s, 16)` before their range checks).
pub fn parse_hex(s: &str) -> Option<u64> {
    parse_radix(s, 16)
}

/// `get_unsigned(_, s, 0)`.
pub fn parse_u32(s: &str) -> Option<u32> {
    parse_c_number(s).and_then(|v| u32::try_from(v).ok())
}

/// iproute2's rt_dsfield as shipped (the DSCP code points, RFC 2474, 2597,
/// 2598), used when no /etc/iproute2/rt_dsfield is installed.
const DSFIELD_BUILTIN: &[(u8, &str)] = &[
    (0x00, "default"),
    (0x28, "AF11"),
    (0x30, "AF12"),
    (0x38, "AF13"),
    (0x48, "AF21"),
    (0x50, "AF22"),
    (0x58, "AF23"),
    (0x68, "AF31"),
    (0x70, "AF32"),
    (0x78, "AF33"),
    (0x88, "AF41"),
    (0x90, "AF42"),
    (0x98, "AF43"),
    (0x20, "CS1"),
    (0x40, "CS2"),
    (0x60, "CS3"),
    (0x80, "CS4"),
    (0xa0, "CS5"),
    (0xc0, "CS6"),
    (0xe0, "CS7"),
    (0xb8, "EF"),
];

/// Where iproute2 looks for the table (Debian's, then newer iproute2's).
const DSFIELD_FILES: &[&str] = &["/etc/iproute2/rt_dsfield", "/usr/share/iproute2/rt_dsfield"];

/// Names by value: the installed table if there is one, else the built-in.
fn dsfield_table() -> &'static [Option<String>; 256] {
    static TABLE: OnceLock<[Option<String>; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table: [Option<String>; 256] = std::array::from_fn(|_| None);
        let installed = DSFIELD_FILES
            .iter()
            .find_map(|path| std::fs::read_to_string(path).ok());
        match installed {
            Some(text) => {
                for (value, name) in parse_dsfield_file(&text) {
                    table[value as usize] = Some(name);
                }
            }
            None => {
                for (value, name) in DSFIELD_BUILTIN {
                    table[*value as usize] = Some(name.to_string());
                }
            }
        }
        table
    })
}

/// The `VALUE NAME` lines of an rt_dsfield file (`#` comments; values in
/// hex with `0x` or decimal, as iproute2 reads them).
pub fn parse_dsfield_file(text: &str) -> Vec<(u8, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let mut words = line.split_whitespace();
            let (value, name) = (words.next()?, words.next()?);
            let value = match value.strip_prefix("0x") {
                Some(hex) => u8::from_str_radix(hex, 16).ok()?,
                None => value.parse().ok()?,
            };
            Some((value, name.to_string()))
        })
        .collect()
}

/// A TOS byte as `rtnl_dsfield_a2n` reads it: a name from the table
/// (case matters: `EF`), else hex with or without `0x` (`b8`, `0x10`).
pub fn parse_dsfield(s: &str) -> Option<u8> {
    if let Some(v) = dsfield_table().iter().position(|n| n.as_deref() == Some(s)) {
        return Some(v as u8);
    }
    parse_radix(s, 16).and_then(|v| u8::try_from(v).ok())
}

/// A TOS byte as `ip` prints it: its name, else `0x%02x`.
pub fn dsfield_name(value: u8) -> String {
    dsfield_table()[value as usize]
        .clone()
        .unwrap_or_else(|| format!("0x{value:02x}"))
}

/// The mode `ip tunnel` gives a tunnel whose words name none, from the
/// start of its name (`gre1` is gre, `isatap0` isatap, `vti0` vti).
pub fn mode_from_name(name: &str) -> Option<&'static str> {
    ["gre", "ipip", "sit", "isatap", "vti"]
        .into_iter()
        .find(|m| name.starts_with(m))
}

/// An error `ip` reports in these words, with its exit status (255 for
/// what `ip` rejects while reading the command line, 1 for the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpError {
    pub message: String,
    pub status: i32,
}

impl IpError {
    /// Rejected while reading the command line (`exit(-1)` in `ip`).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            status: 255,
        }
    }

    /// Rejected afterwards (`ip` returns -1 from the command: status 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            status: 1,
        }
    }

    /// `invarg()`: `Error: argument "ARG" is wrong: WHAT`.
    pub fn invalid(what: &str, arg: &str) -> Self {
        Self::usage(format!("Error: argument \"{arg}\" is wrong: {what}"))
    }
}

impl fmt::Display for IpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for IpError {}

/// Every word `ip tunnel` knows after its command, for completion: the
/// keywords, the modes, and the values some of them take.
pub const TUNNEL_WORDS: &[&str] = &[
    "name",
    "mode",
    "gre",
    "ipip",
    "sit",
    "isatap",
    "vti",
    "remote",
    "local",
    "any",
    "key",
    "ikey",
    "okey",
    "nokey",
    "noikey",
    "nookey",
    "seq",
    "iseq",
    "oseq",
    "noseq",
    "csum",
    "icsum",
    "ocsum",
    "nocsum",
    "ttl",
    "hoplimit",
    "tos",
    "dsfield",
    "tclass",
    "inherit",
    "pmtudisc",
    "nopmtudisc",
    "rpfilter",
    "norpfilter",
    "dev",
    "prl-default",
    "prl-nodefault",
    "prl-delete",
    // `-6 tunnel`'s own.
    "ip6gre",
    "ip6ip6",
    "ipip6",
    "encaplimit",
    "none",
    "hlim",
    "tc",
    "flowlabel",
    "fl",
    "allow-localremote",
    "noallow-localremote",
];

/// The commands of `ip tunnel`, in the order iproute2 tries them.
pub const TUNNEL_COMMANDS: &[&str] = &["add", "change", "delete", "show", "lst", "list", "prl"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_numbers() {
        assert_eq!(parse_c_number("010"), Some(8));
        assert_eq!(parse_c_number("0x40"), Some(64));
        assert_eq!(parse_c_number("0X1f"), Some(31));
        assert_eq!(parse_c_number("0"), Some(0));
        assert_eq!(parse_c_number("+7"), Some(7));
        assert_eq!(parse_c_number("-0"), Some(0));
        for bad in ["", "08", "0x", "x1", "1a", "-1", "0x-1", " "] {
            assert_eq!(parse_c_number(bad), None, "{bad:?}");
        }
        assert_eq!(parse_u8("0377"), Some(255));
        assert_eq!(parse_u8("256"), None);
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32("0x100000000"), None);
    }

    #[test]
    fn prefixes() {
        assert!(matches("a", "add") && matches("add", "add"));
        assert!(!matches("", "add") && !matches("adds", "add"));
        assert_eq!(first_match("d", TUNNEL_COMMANDS), Some("delete"));
        assert_eq!(first_match("l", TUNNEL_COMMANDS), Some("lst"));
        assert_eq!(first_match("x", TUNNEL_COMMANDS), None);
    }
}
