//! Bounds-checked access to packet bytes, for XDP frames and skbs alike.

use core::mem::size_of;

use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel, bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};

/// The directly accessible bytes of a packet.
pub trait Frame {
    fn start(&self) -> usize;
    /// End of the directly accessible bytes.
    fn end(&self) -> usize;
    /// Length of the whole packet (an skb may hold more than its linear part).
    fn total_len(&self) -> usize;
    /// Copies `len` packet bytes from `off` to `dst`, linear or not.
    fn load(&self, off: usize, dst: *mut u8, len: usize) -> bool;
    /// Is the packet's checksum still to be filled in by offload
    /// (CHECKSUM_PARTIAL)? The kernel's receive path treats such a
    /// checksum as verified. Only an skb can tell.
    fn checksum_pending(&self) -> bool {
        false
    }
    /// Can `checksum_pending` tell? (An XDP frame cannot.)
    fn sees_offload(&self) -> bool {
        false
    }
    /// Does `checksum_pending` read the skb's own word (the running
    /// kernel's layout was found)?
    fn offload_known(&self) -> bool {
        false
    }
}

/// `Frame::start` and `Frame::end` of a context whose linear bytes are
/// `data()..data_end()`, as both XDP's and tc's are.
macro_rules! linear_bytes_from_data {
    () => {
        #[inline(always)]
        fn start(&self) -> usize {
            self.data()
        }

        #[inline(always)]
        fn end(&self) -> usize {
            self.data_end()
        }
    };
}

impl Frame for XdpContext {
    linear_bytes_from_data!();

    #[inline(always)]
    fn total_len(&self) -> usize {
        self.data_end() - self.data()
    }

    #[inline(always)]
    fn load(&self, off: usize, dst: *mut u8, len: usize) -> bool {
        // SAFETY: the helper checks the packet bounds; `dst` has `len` bytes.
        unsafe { bpf_xdp_load_bytes(self.ctx, off as u32, dst as *mut _, len as u32) == 0 }
    }
}

/// Where `sk_buff::ip_summed` sits in the running kernel: its byte offset
/// and the bit its two bits start at. Userspace reads them from the
/// kernel's BTF at load time; 0 bytes means unknown.
#[unsafe(no_mangle)]
static SKB_IP_SUMMED_BYTE: u32 = 0;
#[unsafe(no_mangle)]
static SKB_IP_SUMMED_SHIFT: u32 = 0;

/// The kernel's `CHECKSUM_PARTIAL`.
const CHECKSUM_PARTIAL: u8 = 3;

impl Frame for TcContext {
    #[inline(always)]
    fn sees_offload(&self) -> bool {
        true
    }

    #[inline(always)]
    fn offload_known(&self) -> bool {
        // SAFETY: a read-only global, set before the program was loaded.
        unsafe { core::ptr::read_volatile(&SKB_IP_SUMMED_BYTE) != 0 }
    }

    #[inline(always)]
    fn checksum_pending(&self) -> bool {
        // SAFETY: read-only globals, set before the program was loaded.
        let (byte, shift) = unsafe {
            (
                core::ptr::read_volatile(&SKB_IP_SUMMED_BYTE),
                core::ptr::read_volatile(&SKB_IP_SUMMED_SHIFT),
            )
        };
        if byte == 0 || byte > 1024 || shift > 6 {
            return false;
        }
        let mut value = 0u8;
        // SAFETY: reads one byte of the kernel's sk_buff behind our context
        // into a stack variable; the helper checks the address.
        let ok = unsafe {
            bpf_probe_read_kernel(
                &mut value as *mut u8 as *mut _,
                1,
                (self.skb.skb as *const u8).add(byte as usize) as *const _,
            )
        } == 0;
        ok && (value >> shift) & 3 == CHECKSUM_PARTIAL
    }

    linear_bytes_from_data!();

    #[inline(always)]
    fn total_len(&self) -> usize {
        self.len() as usize
    }

    #[inline(always)]
    fn load(&self, off: usize, dst: *mut u8, len: usize) -> bool {
        // SAFETY: the helper checks the packet bounds; `dst` has `len` bytes.
        unsafe {
            bpf_skb_load_bytes(
                self.skb.skb as *const _,
                off as u32,
                dst as *mut _,
                len as u32,
            ) == 0
        }
    }
}

/// A pointer to a `T` at `offset` bytes into the packet, if the whole `T`
/// lies inside it.
#[inline(always)]
pub fn ptr_at<T, F: Frame>(frame: &F, offset: usize) -> Result<*const T, ()> {
    let start = frame.start();
    if start + offset + size_of::<T>() > frame.end() {
        return Err(());
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
pub fn ptr_at_mut<T, F: Frame>(frame: &F, offset: usize) -> Result<*mut T, ()> {
    ptr_at::<T, F>(frame, offset).map(|p| p as *mut T)
}

/// Copies the `T` at `offset` out of the packet with loads of `T`'s
/// alignment. Use it for types made of halfwords (`wire::Ipv4Words`,
/// `GreHdr`, `[u16; N]`) at even offsets: frames start at even addresses,
/// and a byte array would be read one byte at a time.
#[inline(always)]
pub fn read_at<T: Copy, F: Frame>(frame: &F, offset: usize) -> Result<T, ()> {
    let at = ptr_at::<T, F>(frame, offset)?;
    // SAFETY: bounds checked; aligned as said above.
    Ok(unsafe { at.read() })
}

/// Writes `value` at `offset` (linear bytes, such as headers just pushed)
/// with stores of `T`'s alignment: halfwords at even offsets, as `read_at`
/// reads them.
#[inline(always)]
pub fn write_at<T, F: Frame>(frame: &F, offset: usize, value: T) -> Result<(), ()> {
    let at = ptr_at_mut::<T, F>(frame, offset)?;
    // SAFETY: bounds checked after the last change to the packet.
    unsafe { at.write(value) };
    Ok(())
}
