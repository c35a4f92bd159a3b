//! Bounds-checked access to packet bytes, for XDP frames and skbs alike.

use core::mem::size_of;

use aya_ebpf::{
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
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
}

impl Frame for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }

    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }

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

impl Frame for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }

    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }

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
