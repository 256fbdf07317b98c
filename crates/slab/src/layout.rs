//! Slab geometry: how big a slab is, where its objects start, and how an object finds its slab.
//!
//! A slab is one chunk from the page source: `slab_bytes` bytes (a power of two, at least
//! [`PAGE_SIZE`]) aligned to `slab_bytes`. It starts with the slab header; objects follow
//! from `first_offset` (the header size rounded up to the alignment), `stride` bytes apart.
//! Because the chunk is naturally aligned, `address & !(slab_bytes - 1)` is the slab of any
//! object inside it.
//!
//! # Choosing the slab size
//!
//! Like SLUB's order calculation, the size trades the cost of taking a slab (a page-source
//! call, a lock) against memory held by partly used slabs. `slab_bytes` is the smallest power
//! of two from [`PAGE_SIZE`] up to [`MAX_SLAB_BYTES`] that
//!
//! 1. holds at least [`MIN_OBJECTS`] objects ([`MIN_OBJECTS_LARGE`] when the stride is a
//!    page or more), so a bulk refill of a sheaf usually needs one slab, and
//! 2. wastes at most an eighth of itself at the end (after the header and the last object).
//!
//! If no size up to the cap meets both, the smallest size meeting (1) is taken, else the cap.
//! With [`MAX_OBJECT_SIZE`](object_alloc::MAX_OBJECT_SIZE) = 64 KiB and alignment at most a
//! page, a 1 MiB slab always holds at least 15 objects.
//!
//! # Validation
//!
//! [`SlabLayout::new`] is the only way to build a layout from a configuration, and it refuses
//! (with the [`ConfigError`] that [`CacheConfig::validate`] gives, naming the field) every
//! configuration that is not valid: an object size of 0 or above `MAX_OBJECT_SIZE`, an
//! alignment that is not a power of two or is above [`PAGE_SIZE`], and so on. As in the
//! kernel's choice of slab order, a slab then always holds at least one object, and every
//! object lies inside its slab after the header:
//!
//! ```text
//! first_offset + objects_per_slab * stride <= slab_bytes,   objects_per_slab >= 1
//! ```
//!
//! which is checked again, with overflow-checked arithmetic, before a layout is returned; the
//! slab pool writes objects (and poison) only within that bound.

use std::ptr::NonNull;

use object_alloc::{CacheConfig, ConfigError, PAGE_SIZE};

use crate::pool::SLAB_HEADER_BYTES;

/// The least number of objects a slab of small objects holds.
pub const MIN_OBJECTS: usize = 16;
/// The least number of objects a slab of objects of a page or more holds.
pub const MIN_OBJECTS_LARGE: usize = 8;
/// The largest slab.
pub const MAX_SLAB_BYTES: usize = 1 << 20;

/// Geometry of a slab: a naturally aligned power-of-two chunk carved into `objects_per_slab`
/// objects of `stride` bytes; object → slab base by address mask.
///
/// ```
/// use std::ptr::NonNull;
/// use object_alloc::CacheConfig;
/// use slab::SlabLayout;
///
/// let layout = SlabLayout::new(&CacheConfig::new(100).with_align(16))?;
/// assert_eq!(layout.stride, 112);
/// assert!(layout.slab_bytes.is_power_of_two() && layout.objects_per_slab >= 16);
/// // The third object of a slab at 0x10_0000 (an address for illustration only).
/// let base = 0x10_0000usize;
/// let object = NonNull::new((base + layout.first_offset + 2 * layout.stride) as *mut u8).unwrap();
/// assert_eq!(layout.slab_base(object).as_ptr() as usize, base);
/// assert_eq!(layout.object_index(object), 2);
///
/// // A configuration whose objects could not fit a slab is refused, naming the field.
/// let err = SlabLayout::new(&CacheConfig::new(2 << 20)).unwrap_err();
/// assert_eq!(err.field, "object_size");
/// # Ok::<(), object_alloc::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabLayout {
    /// Bytes the caller may use in each object (the configured object size).
    pub object_size: usize,
    /// Alignment of every object.
    pub align: usize,
    /// Distance between consecutive objects: [`CacheConfig::stride`].
    pub stride: usize,
    /// Bytes of one slab: a power of two, and the slab's alignment.
    pub slab_bytes: usize,
    /// Objects in one slab.
    pub objects_per_slab: usize,
    /// Offset of the first object from the slab base: the header rounded up to `align`.
    pub first_offset: usize,
}

impl SlabLayout {
    /// The layout for `config`'s object size and alignment (see the module documentation for
    /// the rule).
    ///
    /// # Errors
    ///
    /// Refuses any configuration that [`CacheConfig::validate`] refuses, with its error (which
    /// names the field), so that no layout describes an object outside its slab.
    pub fn new(config: &CacheConfig) -> Result<SlabLayout, ConfigError> {
        config.validate()?;
        let align = config.align;
        let object_size = config.object_size;
        let too_large = || {
            ConfigError::new(
                "object_size",
                object_size,
                format!("an object that fits a slab of at most {MAX_SLAB_BYTES} bytes"),
            )
        };
        let stride = object_size
            .max(size_of::<usize>())
            .checked_next_multiple_of(align)
            .ok_or_else(too_large)?;
        let first_offset = SLAB_HEADER_BYTES
            .checked_next_multiple_of(align)
            .ok_or_else(too_large)?;
        let min_objects = if stride >= PAGE_SIZE {
            MIN_OBJECTS_LARGE
        } else {
            MIN_OBJECTS
        };
        let objects_in = |slab_bytes: usize| slab_bytes.saturating_sub(first_offset) / stride;
        let sizes =
            || std::iter::successors(Some(PAGE_SIZE), |&s| (s < MAX_SLAB_BYTES).then_some(s * 2));
        let slab_bytes = sizes()
            .find(|&s| {
                let objects = objects_in(s);
                objects >= min_objects && s - first_offset - objects * stride <= s / 8
            })
            .or_else(|| sizes().find(|&s| objects_in(s) >= min_objects))
            .unwrap_or(MAX_SLAB_BYTES);
        let objects_per_slab = objects_in(slab_bytes);
        // Validation keeps objects small enough for this never to fail; the check stays so
        // that no future limit can make a slab's objects overrun it.
        let end = objects_per_slab
            .checked_mul(stride)
            .and_then(|bytes| bytes.checked_add(first_offset));
        if objects_per_slab == 0 || end.is_none_or(|end| end > slab_bytes) {
            return Err(too_large());
        }
        Ok(SlabLayout {
            object_size,
            align,
            stride,
            slab_bytes,
            objects_per_slab,
            first_offset,
        })
    }

    /// The base (header) of the slab holding `object`.
    #[inline]
    pub fn slab_base(&self, object: NonNull<u8>) -> NonNull<u8> {
        let mask = self.slab_bytes - 1;
        object.map_addr(|addr| {
            // The slab base is a non-zero address (a mapped chunk), and `object` lies in it.
            std::num::NonZeroUsize::new(addr.get() & !mask).unwrap_or(addr)
        })
    }

    /// The index of `object` in its slab (0 for the first object).
    #[inline]
    pub fn object_index(&self, object: NonNull<u8>) -> usize {
        let offset = object.addr().get() & (self.slab_bytes - 1);
        offset.wrapping_sub(self.first_offset) / self.stride
    }

    /// Whether `object` is the start of an object slot of its slab (a check for debug builds
    /// and tests).
    pub fn is_object_start(&self, object: NonNull<u8>) -> bool {
        let offset = object.addr().get() & (self.slab_bytes - 1);
        offset >= self.first_offset
            && (offset - self.first_offset).is_multiple_of(self.stride)
            && (offset - self.first_offset) / self.stride < self.objects_per_slab
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(size: usize, align: usize) {
        let config = CacheConfig::new(size).with_align(align);
        let l = SlabLayout::new(&config).unwrap();
        let what = format!("size {size} align {align}: {l:?}");
        assert!(l.slab_bytes.is_power_of_two(), "{what}");
        assert!(
            (PAGE_SIZE..=MAX_SLAB_BYTES).contains(&l.slab_bytes),
            "{what}"
        );
        assert_eq!(l.stride, config.stride(), "{what}");
        assert!(l.stride >= size && l.stride >= size_of::<usize>(), "{what}");
        assert!(l.stride.is_multiple_of(align), "{what}");
        assert!(l.first_offset >= SLAB_HEADER_BYTES, "{what}");
        assert!(l.first_offset.is_multiple_of(align), "{what}");
        assert!(
            l.first_offset + l.objects_per_slab * l.stride <= l.slab_bytes,
            "{what}"
        );
        let min = if l.stride >= PAGE_SIZE {
            MIN_OBJECTS_LARGE
        } else {
            MIN_OBJECTS
        };
        assert!(l.objects_per_slab >= min, "{what}");
        // The smallest size that meets the object minimum was not skipped for nothing: a
        // smaller slab holds too few objects, or wastes more than an eighth.
        if l.slab_bytes > PAGE_SIZE {
            let smaller = l.slab_bytes / 2;
            let objects = (smaller - l.first_offset.min(smaller)) / l.stride;
            let waste = smaller.saturating_sub(l.first_offset + objects * l.stride);
            assert!(objects < min || waste > smaller / 8, "{what}");
        }
    }

    #[test]
    fn layout_holds_for_every_size_and_alignment() {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
            let step = if align >= 64 { 7 } else { 1 };
            for size in (1..=object_alloc::MAX_OBJECT_SIZE).step_by(step) {
                check(size, align);
            }
            check(object_alloc::MAX_OBJECT_SIZE, align);
        }
    }

    #[test]
    fn familiar_sizes_get_familiar_slabs() {
        let l = SlabLayout::new(&CacheConfig::new(64)).unwrap();
        assert_eq!(
            (l.slab_bytes, l.stride, l.first_offset),
            (PAGE_SIZE, 64, 40)
        );
        assert_eq!(l.objects_per_slab, 63);
        let l = SlabLayout::new(&CacheConfig::new(4096).with_align(4096)).unwrap();
        assert_eq!(l.first_offset, 4096);
        assert!(l.objects_per_slab >= MIN_OBJECTS_LARGE);
        let l = SlabLayout::new(&CacheConfig::new(65536)).unwrap();
        assert_eq!((l.slab_bytes, l.objects_per_slab), (MAX_SLAB_BYTES, 15));
    }

    #[test]
    fn mask_lookup_finds_base_and_index() {
        let l = SlabLayout::new(&CacheConfig::new(24).with_align(8)).unwrap();
        let base = 0x7f00_0000_0000usize;
        for index in 0..l.objects_per_slab {
            let object =
                NonNull::new((base + l.first_offset + index * l.stride) as *mut u8).unwrap();
            assert_eq!(l.slab_base(object).addr().get(), base);
            assert_eq!(l.object_index(object), index);
            assert!(l.is_object_start(object));
            let inside = NonNull::new(object.as_ptr().wrapping_add(1)).unwrap();
            assert!(!l.is_object_start(inside));
        }
        let header = NonNull::new(base as *mut u8).unwrap();
        assert!(!l.is_object_start(header));
    }
}
