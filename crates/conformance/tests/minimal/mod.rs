//! A design that promises nothing beyond the trait: objects from the system allocator, prefill
//! emulated with [`BulkPrefill`]. The suite must run every clause that applies to it and say
//! why the others do not.

use std::alloc::{GlobalAlloc, Layout, System};
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use object_alloc::rcu::{DeferTarget, Deferrer};
use object_alloc::{
    AllocError, AllocFlags, BulkPrefill, CacheConfig, Capabilities, ConfigError, ObjectAlloc,
};

#[derive(Debug)]
pub(crate) struct Layouts {
    layout: Layout,
}

impl DeferTarget for Layouts {
    unsafe fn free_now(&self, object: NonNull<u8>) {
        // SAFETY: deferred objects came from `System.alloc(layout)`.
        unsafe { System.dealloc(object.as_ptr(), self.layout) };
    }
}

/// The system allocator behind the trait, with no capability.
#[derive(Debug)]
pub(crate) struct Minimal {
    deferrer: Deferrer<Layouts>,
    object_size: usize,
    capacity: usize,
}

impl Minimal {
    fn layout(&self) -> Layout {
        self.deferrer.get().layout
    }
}

impl ObjectAlloc for Minimal {
    const NAME: &'static str = "minimal";
    const DESCRIPTION: &'static str = "the system allocator with emulated prefill (self-test)";
    const CAPABILITIES: Capabilities = Capabilities {
        native_prefill: false,
        honours_nowait: false,
        uses_page_source: false,
        tracks_live_objects: false,
        sheaf_layer: false,
    };

    type Prefill<'a> = BulkPrefill<'a, Self>;

    fn new(config: &CacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let layout = Layout::from_size_align(config.object_size, config.align)
            .map_err(|_| ConfigError::new("align", config.align, "a valid layout"))?;
        Ok(Self {
            deferrer: Deferrer::new(Layouts { layout }),
            object_size: config.object_size,
            capacity: config.effective_sheaf_capacity(),
        })
    }

    fn alloc(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        // SAFETY: the layout has a non-zero size (validated).
        let ptr = unsafe {
            if flags.zero() {
                System.alloc_zeroed(self.layout())
            } else {
                System.alloc(self.layout())
            }
        };
        NonNull::new(ptr)
    }

    unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: the caller passes a live object of this cache, from `System.alloc(layout)`.
        unsafe { System.dealloc(object.as_ptr(), self.layout()) };
    }

    fn alloc_bulk(
        &self,
        flags: AllocFlags,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError> {
        for i in 0..out.len() {
            match self.alloc(flags) {
                Some(object) => {
                    out[i].write(object);
                }
                None => {
                    for slot in &out[..i] {
                        // SAFETY: slots before `i` were written above and are live.
                        unsafe { self.free(slot.assume_init()) };
                    }
                    return Err(AllocError::OutOfMemory);
                }
            }
        }
        Ok(())
    }

    unsafe fn free_bulk(&self, objects: &[NonNull<u8>]) {
        for &object in objects {
            // SAFETY: the caller passes live objects of this cache, each once.
            unsafe { self.free(object) };
        }
    }

    unsafe fn free_deferred(&self, object: NonNull<u8>) {
        // SAFETY: the caller hands over a live object of this cache.
        unsafe { self.deferrer.defer_free(object) };
    }

    fn prefill(&self, flags: AllocFlags, count: usize) -> Result<Self::Prefill<'_>, AllocError> {
        BulkPrefill::new(self, self.object_size, self.capacity, flags, count)
    }

    fn barrier(&self) {
        self.deferrer.barrier();
    }
}
