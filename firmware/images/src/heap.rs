//! The heap: the library decodes a command envelope into Strings (tenant, ids, the TTS
//! text) and builds the signed message the signature check hashes (the body with a domain
//! prefix), so the speaker needs about twice the largest envelope's size per command, all
//! freed when the command is handled (the envelope itself is checked where it lies, in
//! the mailbox). A first-fit heap (`embedded-alloc`'s linked-list heap) with its peak use
//! recorded for the budget. Running out would panic and reset the terminal: the heap is
//! sized for the largest envelope the mailbox holds, which the interop test writes.

use core::alloc::{GlobalAlloc, Layout};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};

use embedded_alloc::LlffHeap;

/// The global allocator: a first-fit heap that remembers its peak use.
pub struct PeakHeap {
    heap: LlffHeap,
    size: AtomicUsize,
    peak: AtomicUsize,
}

impl PeakHeap {
    /// An empty heap; [`PeakHeap::init`] gives it memory.
    pub const fn empty() -> PeakHeap {
        PeakHeap { heap: LlffHeap::empty(), size: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    /// Gives the heap its memory; call once, before anything allocates.
    pub fn init(&self, memory: &'static mut [MaybeUninit<u8>]) {
        self.size.store(memory.len(), Ordering::Relaxed);
        // SAFETY: the memory is 'static, exclusively ours (a `&'static mut`), and this is
        // called once before the first allocation.
        unsafe { self.heap.init(memory.as_mut_ptr() as usize, memory.len()) }
    }

    /// Bytes in use at the peak since boot.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Bytes the heap has.
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }
}

// SAFETY: every call goes to the linked-list heap, which upholds GlobalAlloc's contract;
// the wrapper only reads how much is in use afterwards.
unsafe impl GlobalAlloc for PeakHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { self.heap.alloc(layout) };
        self.peak.fetch_max(self.heap.used(), Ordering::Relaxed);
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.heap.dealloc(ptr, layout) }
    }
}
