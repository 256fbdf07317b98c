//! [`TypedCache`]: a cache of `T` values with an owning handle.

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use object_alloc::{AllocError, AllocFlags, CacheConfig, ConfigError};

use crate::cache::Cache;
use crate::cache_core::PrefilledSheaf;
use crate::slot::{PerCpu, SlotStrategy};

/// A cache of `T` values: each allocation holds one `T`, dropped and freed with its
/// [`Owned`] handle.
///
/// ```
/// use object_alloc::AllocFlags;
/// use sheaf::TypedCache;
///
/// #[derive(Debug, PartialEq)]
/// struct Node { key: u64, children: [u32; 8] }
///
/// let nodes: TypedCache<Node> = TypedCache::new()?;
/// let mut node = nodes.alloc(Node { key: 1, children: [0; 8] }).expect("memory");
/// node.key = 2;
/// assert_eq!(node.key, 2);
///
/// // Reserve three nodes, then construct them where failure is not an option.
/// let mut reserve = nodes.prefill(AllocFlags::empty(), 3)?;
/// let a = reserve.alloc(Node { key: 10, children: [1; 8] }).unwrap();
/// assert_eq!(a.children[7], 1);
/// drop(reserve); // the unused two go back to the cache
/// drop((node, a)); // each value is dropped and its object freed
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TypedCache<T, S: SlotStrategy = PerCpu> {
    cache: Cache<S>,
    _values: PhantomData<fn(T) -> T>,
}

impl<T, S: SlotStrategy> TypedCache<T, S> {
    /// A cache sized and aligned for `T`, with every other setting at its default.
    pub fn new() -> Result<Self, ConfigError> {
        Self::with_config(CacheConfig::new(1))
    }

    /// A cache for `T` with `config`'s settings; its object size and alignment are raised to
    /// fit `T`.
    ///
    /// # Errors
    ///
    /// Refuses, naming the field, an alignment that is not a power of two (before raising it),
    /// and whatever [`Cache::new`] refuses after raising: a `T` larger than
    /// [`MAX_OBJECT_SIZE`](object_alloc::MAX_OBJECT_SIZE) (`object_size`) or aligned to more
    /// than a page (`align`).
    pub fn with_config(mut config: CacheConfig) -> Result<Self, ConfigError> {
        if !config.align.is_power_of_two() {
            return Err(ConfigError::new(
                "align",
                config.align,
                format!("a power of two between 1 and {}", object_alloc::PAGE_SIZE),
            ));
        }
        config.object_size = config.object_size.max(size_of::<T>()).max(1);
        config.align = config.align.max(align_of::<T>());
        Ok(Self {
            cache: Cache::new(&config)?,
            _values: PhantomData,
        })
    }

    /// The untyped cache underneath.
    pub fn cache(&self) -> &Cache<S> {
        &self.cache
    }

    /// Moves `value` into a new object; `None` (dropping nothing: the value comes back in
    /// `Err`) when memory cannot be had.
    pub fn try_alloc(&self, value: T) -> Result<Owned<'_, T, S>, T> {
        match self.cache.alloc(AllocFlags::empty()) {
            // SAFETY: a fresh object of this cache, sized and aligned for `T`.
            Some(object) => Ok(unsafe { Owned::init(&self.cache, object, value) }),
            None => Err(value),
        }
    }

    /// Moves `value` into a new object, or `None` when memory cannot be had.
    pub fn alloc(&self, value: T) -> Option<Owned<'_, T, S>> {
        self.try_alloc(value).ok()
    }

    /// Reserves at least `count` objects (see [`Cache::prefill`]).
    pub fn prefill(
        &self,
        flags: AllocFlags,
        count: usize,
    ) -> Result<TypedPrefill<'_, T, S>, AllocError> {
        Ok(TypedPrefill {
            sheaf: self.cache.prefill(flags, count)?,
            cache: &self.cache,
            _values: PhantomData,
        })
    }
}

impl<T, S: SlotStrategy> fmt::Debug for TypedCache<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedCache")
            .field("type", &std::any::type_name::<T>())
            .field("cache", &self.cache)
            .finish()
    }
}

/// A `T` living in an object of a [`TypedCache`]; dropping it drops the value and frees the
/// object.
pub struct Owned<'c, T, S: SlotStrategy = PerCpu> {
    value: NonNull<T>,
    cache: &'c Cache<S>,
}

impl<'c, T, S: SlotStrategy> Owned<'c, T, S> {
    /// # Safety
    ///
    /// - `object` is a live object of `cache`, sized and aligned for `T`, owned by the caller.
    unsafe fn init(cache: &'c Cache<S>, object: NonNull<u8>, value: T) -> Self {
        let value_ptr = object.cast::<T>();
        // SAFETY: sized and aligned for `T`, and ours.
        unsafe { value_ptr.write(value) };
        Self {
            value: value_ptr,
            cache,
        }
    }

    /// Takes the value out and frees the object.
    pub fn into_inner(this: Self) -> T {
        let this = ManuallyDrop::new(this);
        // SAFETY: the object holds an initialised `T`, read out once; the handle is not
        // dropped, so the value is not dropped again.
        let value = unsafe { this.value.read() };
        // SAFETY: the object came from this cache and nothing refers to it any more.
        unsafe { this.cache.free(this.value.cast()) };
        value
    }
}

impl<T, S: SlotStrategy> Deref for Owned<'_, T, S> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the handle owns an initialised `T`.
        unsafe { self.value.as_ref() }
    }
}

impl<T, S: SlotStrategy> DerefMut for Owned<'_, T, S> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the handle owns an initialised `T`, borrowed mutably through `&mut self`.
        unsafe { self.value.as_mut() }
    }
}

impl<T, S: SlotStrategy> Drop for Owned<'_, T, S> {
    fn drop(&mut self) {
        // SAFETY: the handle owns an initialised `T`, dropped once here; then the object is
        // freed back to the cache it came from.
        unsafe {
            self.value.drop_in_place();
            self.cache.free(self.value.cast());
        }
    }
}

impl<T: fmt::Debug, S: SlotStrategy> fmt::Debug for Owned<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

// SAFETY: the handle owns its `T` like a `Box` does; the object may be freed from any thread.
unsafe impl<T: Send, S: SlotStrategy> Send for Owned<'_, T, S> {}
// SAFETY: shared access to the handle gives only `&T`.
unsafe impl<T: Sync, S: SlotStrategy> Sync for Owned<'_, T, S> {}

/// A prefilled sheaf of a [`TypedCache`]: constructs values in reserved objects.
pub struct TypedPrefill<'c, T, S: SlotStrategy = PerCpu> {
    sheaf: PrefilledSheaf<'c, S>,
    cache: &'c Cache<S>,
    _values: PhantomData<fn(T) -> T>,
}

impl<'c, T, S: SlotStrategy> TypedPrefill<'c, T, S> {
    /// Moves `value` into a reserved object; gives the value back when the sheaf is empty.
    pub fn alloc(&mut self, value: T) -> Result<Owned<'c, T, S>, T> {
        match self.sheaf.alloc(AllocFlags::empty()) {
            // SAFETY: a reserved object of this cache, sized and aligned for `T`.
            Some(object) => Ok(unsafe { Owned::init(self.cache, object, value) }),
            None => Err(value),
        }
    }

    /// Objects still reserved.
    pub fn size(&self) -> usize {
        self.sheaf.size()
    }

    /// See [`PrefilledSheaf::refill`].
    pub fn refill(&mut self, flags: AllocFlags, count: usize) -> Result<(), AllocError> {
        self.sheaf.refill(flags, count)
    }

    /// See [`PrefilledSheaf::return_with`].
    pub fn return_with(self, flags: AllocFlags) {
        self.sheaf.return_with(flags)
    }
}

impl<T, S: SlotStrategy> fmt::Debug for TypedPrefill<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedPrefill")
            .field("type", &std::any::type_name::<T>())
            .field("sheaf", &self.sheaf)
            .finish()
    }
}
