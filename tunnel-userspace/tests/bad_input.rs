//! Mistakes get one clear line, a nonzero exit and nothing half-done:
//! bad words, missing kernel support, a batch file that stops at its first
//! error, and a data plane loaded by another xtun version.

mod common;

use std::process::Command;

use common::{
    net::{attached_program_ids, exec_line, stdout, try_xtun_line, XTUN},
    other_version::OtherVersionDataplane,
};
use tunnel_userspace::testbed::SeedTopology;

#[test]
fn bad_input_gets_one_line_errors_and_changes_nothing() {
    let topo = SeedTopology::new("bad").unwrap();
    let base = "tunnel add tun1 mode gre remote 10.10.20.2 local 10.10.10.2";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "10.10.20.300"], "Error: an IP address is expected rather than \"10.10.20.300\"\n"),
        (vec!["tunnel", "add", "tun1", "mode", "bogus", "remote", "10.10.20.2"], "Unknown tunnel mode \"bogus\"\n"),
        (vec!["tunnel", "add", "tun1", "mode", "ipip", "remote", "10.10.20.2", "key", "1"], "Keys are not allowed with ipip and sit tunnels\n"),
        (vec!["tunnel", "add", "a-name-that-is-too-long", "mode", "gre", "remote", "10.10.20.2"], "Error: argument \"a-name-that-is-too-long\" is wrong: \"name\" not a valid ifname\n"),
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "10.10.20.2", "ttl", "300"], "Error: argument \"300\" is wrong: invalid TTL\n"),
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "10.10.20.2", "dev", "nosuch0"], "Cannot find device \"nosuch0\"\n"),
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "192.0.2.1"], ""),
        (vec!["attach", "nosuch0"], "Cannot find device \"nosuch0\"\n"),
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "any", "local", "10.10.10.9"], "xtun: local 10.10.10.9 is not an address of this host: a tunnel with remote any receives on the interface that has it\n"),
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "any"], "xtun: a tunnel with remote any and local any (gre) needs `dev PHYS`: the underlay to receive on\n"),
        (vec!["tunnel", "add", "tun1", "mode", "isatap", "remote", "10.10.20.2"], "xtun: an isatap tunnel has no fixed remote (its remotes come from the inner destinations)\n"),
        (vec!["tunnel", "add", "tun1", "mode", "ipip", "remote", "10.10.20.2", "csum"], "xtun: \"csum\" is a GRE option (not for ipip, sit or isatap)\n"),
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "10.10.20.2", "tos", "inherit/0x1ff"], "Error: argument \"inherit\" is wrong: bad TOS value\n"),
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "10.10.20.2", "prl-default", "10.0.0.1"], "xtun: option \"prl-default (use `xtun tunnel prl prl-default ADDR dev NAME`)\" is not supported by xtun yet\n"),
        (vec!["neigh", "add", "10.1.0.0/16", "lladdr", "10.10.20.2", "dev", "v1"], "xtun: xtun is not attached in this network namespace\n"),
        (vec!["neigh", "add", "10.1.0.0/33", "lladdr", "10.10.20.2", "dev", "v1"], "xtun: invalid prefix length in \"10.1.0.0/33\": expected 0..32\n"),
        (vec!["detach", "v1"], "xtun: xtun is not attached to v1\n"),
        (vec!["tunnel", "del", "v1"], "xtun: delete tunnel \"v1\" failed: not an xtun tunnel\n"),
    ];
    for (args, expected) in cases {
        let mut full = vec![XTUN];
        full.extend(&args);
        let out = topo.ns1.try_exec(&full).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        if !expected.is_empty() {
            assert_eq!(err, expected, "{args:?}");
        }
        let links = stdout(topo.ns1.exec(&["ip", "-o", "link", "show"]).unwrap());
        assert!(
            !links.contains(": tun1:"),
            "{args:?} left an interface: {links}"
        );
        assert_eq!(
            attached_program_ids(&topo.ns1),
            Vec::<String>::new(),
            "{args:?} left programs"
        );
    }
    // Adding a tunnel that exists fails cleanly and keeps the first one.
    let mut add = vec![XTUN];
    add.extend(base.split(' '));
    topo.ns1.exec(&add).unwrap();
    let out = topo.ns1.try_exec(&add).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "add tunnel \"tun1\" failed: File exists\n"
    );
    let mut same = add.clone();
    same[3] = "tun3";
    let out = topo.ns1.try_exec(&same).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("tunnel tun1 already has remote 10.10.20.2 local 10.10.10.2"));
    let shown = stdout(topo.ns1.exec(&[XTUN, "tunnel", "show"]).unwrap());
    assert_eq!(
        shown,
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit\n"
    );
    // The interface is as the kernel makes it: down, NOARP, MTU 1476 (a
    // veth end cannot carry the POINTOPOINT flag; it behaves so: NOARP,
    // one peer).
    let link = stdout(
        topo.ns1
            .exec(&["ip", "-o", "link", "show", "tun1"])
            .unwrap(),
    );
    assert!(
        link.contains("NOARP") && link.contains("mtu 1476"),
        "{link}"
    );
    assert!(
        !link.contains(",UP") && !link.contains("<UP"),
        "created down: {link}"
    );
}

#[test]
fn ipv6_tunnel_bad_input_gets_one_line_errors_and_changes_nothing() {
    let topo = SeedTopology::new("bad6").unwrap();
    let ns = &topo.ns1;
    exec_line(ns, "ip addr add fd00:10::2/64 dev v1 nodad");
    let add = "-6 tunnel add t6x mode ip6gre remote fd00:20::2 local fd00:10::2";
    let cases: Vec<(String, &str)> = vec![
        ("-6 tunnel add t6x mode ip6gre remote 10.10.20.2".to_string(), "Error: inet6 address is expected rather than \"10.10.20.2\".\n"),
        ("-6 tunnel add t6x remote fd00:20::2 local fd00:10::zz".to_string(), "Error: inet6 address is expected rather than \"fd00:10::zz\".\n"),
        ("-6 tunnel add t6x mode bogus remote fd00:20::2".to_string(), "Unknown tunnel mode \"bogus\"\n"),
        (format!("{add} encaplimit 256"), "Error: argument \"256\" is wrong: invalid ELIM\n"),
        (format!("{add} encaplimit -1"), "Error: argument \"-1\" is wrong: invalid ELIM\n"),
        (format!("{add} hoplimit 256"), "Error: argument \"256\" is wrong: invalid TTL\n"),
        (format!("{add} hoplimit inherit"), "Error: argument \"inherit\" is wrong: invalid TTL\n"),
        (format!("{add} tclass 0x100"), "Error: argument \"0x100\" is wrong: invalid TClass\n"),
        (format!("{add} tclass AF41"), "Error: argument \"AF41\" is wrong: invalid TClass\n"),
        (format!("{add} flowlabel 0x100000"), "Error: argument \"0x100000\" is wrong: invalid Flowlabel\n"),
        (format!("{add} flowlabel zz"), "Error: argument \"zz\" is wrong: invalid Flowlabel\n"),
        (format!("{add} key nokey"), "invalid value for \"key\": \"nokey\"; it should be an unsigned integer\n"),
        (format!("{add} okey 1.2.3"), "Error: an IP address is expected rather than \"1.2.3\"\n"),
        (format!("{add} dscp copy"), "Error: argument \"copy\" is wrong: not inherit\n"),
        (format!("{add} dscp inherit"), "xtun: option \"dscp inherit\" is not supported by xtun yet\n"),
        (format!("{add} dev nosuch0"), "Cannot find device \"nosuch0\"\n"),
        (format!("{add} t6y"), "Error: either \"name\" is duplicate, or \"t6y\" is a garbage.\n"),
        (format!("{add} hoplimit"), "Command line is not complete. Try option \"help\"\n"),
        ("-6 tunnel add mode ip6gre remote fd00:20::2".to_string(), "Tunnel interface name not specified\n"),
        ("-6 tunnel add a-name-that-is-too-long mode ip6gre".to_string(), "Error: argument \"a-name-that-is-too-long\" is wrong: \"name\" not a valid ifname\n"),
        ("-6 tunnel add v1 mode ip6gre remote fd00:20::2".to_string(), "add tunnel \"v1\" failed: File exists\n"),
        ("-6 tunnel add t6x mode vti6 remote fd00:20::2".to_string(), "xtun: mode vti6 is not implemented by xtun (use `ip -6 tunnel add ... mode vti6` with the kernel's IPsec)\n"),
        ("-6 tunnel add t6x mode any remote any".to_string(), "xtun: a tunnel with remote any (any) needs `dev PHYS` or a local address of this host: the underlay to receive on\n"),
        ("-family inet6 neigh show".to_string(), "xtun: -6 selects tunnels over an IPv6 underlay (`xtun -6 tunnel`); `neigh` has no IPv6 variant\n"),
        ("-6 tunnel change v1 hoplimit 3".to_string(), "xtun: change tunnel \"v1\" failed: not an xtun tunnel\n"),
        ("-6 tunnel show nosuch".to_string(), "get tunnel \"nosuch\" failed: No such device\n"),
    ];
    for (line, expected) in &cases {
        let out = try_xtun_line(ns, line);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{line} must fail");
        assert_eq!(err, *expected, "{line}");
        let links = stdout(ns.exec(&["ip", "-o", "link", "show"]).unwrap());
        assert!(
            !links.contains(": t6x"),
            "{line} left an interface: {links}"
        );
        assert_eq!(
            attached_program_ids(ns),
            Vec::<String>::new(),
            "{line} left programs"
        );
    }
}

#[test]
fn ip6gretap_bad_input_gets_one_line_errors_and_changes_nothing() {
    let topo = SeedTopology::new("badg6").unwrap();
    let ns = &topo.ns1;
    exec_line(ns, "ip addr add fd00:10::2/64 dev v1 nodad");
    let add = "link add g6x type ip6gretap remote fd00:20::2 local fd00:10::2";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{add} hoplimit 256"),
            "Error: argument \"256\" is wrong: invalid HLIM\n",
        ),
        (
            format!("{add} tclass 0x100"),
            "Error: argument \"0x100\" is wrong: invalid TClass\n",
        ),
        (
            format!("{add} flowlabel 0x100000"),
            "Error: argument \"0x100000\" is wrong: invalid Flowlabel\n",
        ),
        (
            format!("{add} encaplimit 256"),
            "Error: argument \"256\" is wrong: invalid ELIM\n",
        ),
        (
            format!("{add} encaplimit"),
            "Command line is not complete. Try option \"help\"\n",
        ),
        (
            format!("{add} okey 1.2.3"),
            "Error: an IP address is expected rather than \"1.2.3\"\n",
        ),
        (
            format!("{add} dev nosuch0"),
            "Cannot find device \"nosuch0\"\n",
        ),
        (
            format!("{add} fwmark 1"),
            "xtun: option \"fwmark\" is not supported by xtun yet\n",
        ),
        (
            "link add g6x type ip6gretap remote 10.10.20.2".to_string(),
            "Error: inet6 address is expected rather than \"10.10.20.2\".\n",
        ),
        (
            "link add g6x type ip6gretap local fd00:10::2".to_string(),
            "xtun: an ip6gretap link needs remote ADDR (xtun has no remote any for Ethernet)\n",
        ),
        (
            "-6 tunnel add g6x mode ip6gretap remote fd00:20::2".to_string(),
            "Unknown tunnel mode \"ip6gretap\"\n",
        ),
    ];
    for (line, expected) in &cases {
        let out = try_xtun_line(ns, line);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{line} must fail");
        assert_eq!(err, *expected, "{line}");
        let links = stdout(ns.exec(&["ip", "-o", "link", "show"]).unwrap());
        assert!(
            !links.contains(": g6x"),
            "{line} left an interface: {links}"
        );
        assert_eq!(
            attached_program_ids(ns),
            Vec::<String>::new(),
            "{line} left programs"
        );
    }
}

#[test]
fn batch_runs_many_commands_in_one_process_and_stops_at_the_first_error() {
    let topo = SeedTopology::new("batch").unwrap();
    let file = std::env::temp_dir().join(format!("{}-batch.txt", topo.ns1.name));
    std::fs::write(
        &file,
        "# two tunnels to ns2, then a mistake\n\
         tunnel add ta mode gre remote 10.10.20.2 local 10.10.10.2 key 1\n\
         \n\
         tunnel add tb mode ipip remote 10.10.20.2 local 10.10.10.2\n\
         tunnel add tc mode ipip remote 10.10.20.2 key 3\n\
         tunnel add td mode gre remote 10.10.20.2 local 10.10.10.2 key 4\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = topo.ns1.try_exec(&[XTUN, "-batch", path]).unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("xtun: {path}:5:1: keys are not allowed with ipip and sit tunnels\n")
    );
    // The column is that of the word the error is about.
    std::fs::write(&file, "  tunnel add te mode gre remote 10.10.20.300\n").unwrap();
    let out = topo.ns1.try_exec(&[XTUN, "-batch", path]).unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("xtun: {path}:1:33: invalid address \"10.10.20.300\"\n")
    );
    // Streaming commands would wait for the lock the batch holds.
    std::fs::write(&file, "monitor -c 1\n").unwrap();
    let out = topo.ns1.try_exec(&[XTUN, "-batch", path]).unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("xtun: {path}:1:"))
            && err.ends_with("monitor streams until stopped: run it on its own, not in a batch\n"),
        "{err}"
    );
    let shown = stdout(topo.ns1.exec(&[XTUN, "tunnel", "show"]).unwrap());
    assert_eq!(
        shown,
        "ta: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit key 1\n\
         tb: ip/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit\n"
    );
}

#[test]
fn vti_names_the_missing_kernel_support() {
    let topo = SeedTopology::new("vti").unwrap();
    let out = try_xtun_line(
        &topo.ns1,
        "tunnel add vti1 mode vti remote 10.10.20.2 local 10.10.10.2",
    );
    assert!(!out.status.success());
    let config = Command::new("sh")
        .args([
            "-c",
            "zcat /proc/config.gz 2>/dev/null | grep -c '^CONFIG_INET_ESP=[ym]'",
        ])
        .output()
        .unwrap();
    let has_esp = String::from_utf8_lossy(&config.stdout).trim() != "0";
    let expected = if has_esp {
        "xtun: mode vti is not implemented by xtun yet (use `ip tunnel add ... mode vti` with the kernel's IPsec)\n"
    } else {
        "xtun: mode vti needs kernel IPsec with ESP (CONFIG_INET_ESP), which this kernel does not have\n"
    };
    assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
    let links = stdout(topo.ns1.exec(&["ip", "-o", "link", "show"]).unwrap());
    assert!(!links.contains(": vti1:"), "{links}");
}

#[test]
fn a_data_plane_of_another_version_stops_every_command_with_one_line() {
    let topo = SeedTopology::new("oldv").unwrap();
    let ns = &topo.ns1;
    let older = OtherVersionDataplane::load().unwrap();
    older.attach_xdp(ns, "v1").unwrap();
    exec_line(ns, "ip link add d0 type veth peer name d1");
    let links = || stdout(ns.exec(&["ip", "-o", "link", "show"]).unwrap());
    let (links_before, programs_before) = (links(), attached_program_ids(ns));
    assert_eq!(programs_before.len(), 1, "the older XDP program on v1");
    let expected = "the data plane in this namespace was loaded by another xtun version (its XTUN_TUNNELS map is missing or differs); to move to this version, with that version's xtun: `xtun export > FILE`, then `xtun tunnel del` each tunnel and `xtun detach` each interface; then with this one: `xtun apply -f FILE`";
    for (command, context) in [
        (
            "tunnel add tun1 mode gre remote 10.10.20.2 local 10.10.10.2",
            "loading the data plane: ",
        ),
        ("tunnel show", ""),
        ("attach d0", "loading the data plane: "),
        ("detach v1", ""),
        ("status", ""),
    ] {
        let mut full = vec![XTUN];
        full.extend(command.split(' '));
        let out = ns.try_exec(&full).unwrap();
        assert!(!out.status.success(), "{command} must fail");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("xtun: {context}{expected}\n"),
            "{command}"
        );
        assert_eq!(links(), links_before, "{command} changed the interfaces");
        assert_eq!(
            attached_program_ids(ns),
            programs_before,
            "{command} changed the attachments"
        );
        assert_eq!(older.tunnel_entries(), 0, "{command} wrote a tunnel");
    }
}
