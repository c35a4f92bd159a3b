//! The kernel's routing table and neighbours: `bpf_fib_lookup` for a route
//! (tc and XDP), `bpf_redirect_neigh` to send to a next hop (tc).

use core::mem::MaybeUninit;

pub use aya_ebpf::bindings::bpf_fib_lookup as FibParams;
use aya_ebpf::{
    bindings::{bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1},
    helpers::generated::{bpf_fib_lookup, bpf_redirect_neigh},
    EbpfContext,
};
use tunnel_common::wire;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

// `request_in` writes the request as whole aligned words.
const _: () = assert!(
    core::mem::size_of::<FibParams>().is_multiple_of(4) && core::mem::align_of::<FibParams>() >= 4
);

/// An empty route request for `family`, asked as if the packet arrived on
/// `ifindex`; the caller sets the addresses.
#[inline(always)]
pub fn request(family: u8, ifindex: u32) -> FibParams {
    // SAFETY: an all-zero bpf_fib_lookup is a valid (empty) request.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = family;
    params.ifindex = ifindex;
    params
}

/// As `request`, but written in place into `slot` and without the
/// `memset` call that zeroing the whole request compiles to (bpf-linker
/// leaves memset to a subprogram that stores byte by byte, 320
/// instructions here): one store per 32-bit word, volatile so that LLVM
/// cannot merge them back into that call. In place, because copying the
/// request out would bring the call back. For the XDP fast path, which
/// asks several routes per packet.
#[inline(always)]
pub fn request_in(slot: &mut MaybeUninit<FibParams>, family: u8, ifindex: u32) -> &mut FibParams {
    const WORDS: usize = core::mem::size_of::<FibParams>() / 4;
    let words = slot.as_mut_ptr().cast::<u32>();
    let mut i = 0;
    while i < WORDS {
        // SAFETY: within the request, which is 4-byte aligned and a
        // whole number of words long.
        unsafe { words.add(i).write_volatile(0) };
        i += 1;
    }
    // SAFETY: every byte is written, and zero is valid for every field.
    let params = unsafe { slot.assume_init_mut() };
    params.family = family;
    params.ifindex = ifindex;
    params
}

/// Looks `params` up with `flags` (`BPF_FIB_LOOKUP_*`); the helper's
/// `BPF_FIB_LKUP_RET_*` answer, with `params` filled in on success.
#[inline(always)]
pub fn lookup<C: EbpfContext>(ctx: &C, params: &mut FibParams, flags: u32) -> i64 {
    // SAFETY: helper call with a request on our stack.
    unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            params,
            core::mem::size_of::<FibParams>() as i32,
            flags,
        )
    }
}

/// An IPv4 next hop for `redirect_neigh`.
#[inline(always)]
pub fn next_hop_v4(addr: u32) -> bpf_redir_neigh {
    bpf_redir_neigh {
        nh_family: AF_INET as u32,
        __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 { ipv4_nh: addr },
    }
}

/// An IPv6 next hop for `redirect_neigh`.
#[inline(always)]
pub fn next_hop_v6(addr: [u32; 4]) -> bpf_redir_neigh {
    bpf_redir_neigh {
        nh_family: AF_INET6 as u32,
        __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 { ipv6_nh: addr },
    }
}

/// Sends the packet out of `oif` to `next_hop`, whose neighbour the kernel
/// resolves. The helper's tc action.
#[inline(always)]
pub fn redirect_neigh(oif: u32, mut next_hop: bpf_redir_neigh) -> i32 {
    // SAFETY: helper call with parameters on our stack.
    (unsafe {
        bpf_redirect_neigh(
            oif,
            &mut next_hop,
            core::mem::size_of::<bpf_redir_neigh>() as i32,
            0,
        )
    }) as i32
}

/// Sends the packet out of `oif`, routing it through `oif` to find the
/// next hop. The helper's tc action.
#[inline(always)]
pub fn redirect_routed(oif: u32) -> i32 {
    // SAFETY: plain helper call.
    (unsafe { bpf_redirect_neigh(oif, core::ptr::null_mut(), 0, 0) }) as i32
}

/// An IPv6 address as halfwords in memory order, as the FIB helper's
/// 32-bit words in memory order.
#[inline(always)]
pub fn v6_words(w: [u16; 8]) -> [u32; 4] {
    [
        wire::join_words(w[0], w[1]),
        wire::join_words(w[2], w[3]),
        wire::join_words(w[4], w[5]),
        wire::join_words(w[6], w[7]),
    ]
}

/// The FIB helper's IPv6 address words back as halfwords in memory order.
#[inline(always)]
pub fn v6_halfwords(a: [u32; 4]) -> [u16; 8] {
    let [a0, a1] = wire::split_words(a[0]);
    let [b0, b1] = wire::split_words(a[1]);
    let [c0, c1] = wire::split_words(a[2]);
    let [d0, d1] = wire::split_words(a[3]);
    [a0, a1, b0, b1, c0, c1, d0, d1]
}
