//! Design note: how `sheaf` works, where its ideas come from, and the invariant each layer
//! keeps. This module holds no code.
//!
//! # Origin
//!
//! The design is the one Vlastimil Babka introduced into Linux SLUB as *percpu sheaves*
//! (`mm/slub.c`, 2025): per-CPU arrays of free objects (sheaves) in front of the slab
//! allocator, a per-node barn of full and empty sheaves, `rcu_free` sheaves that batch
//! `kfree_rcu`, and the prefill API used by the maple tree
//! (`kmem_cache_prefill_sheaf`, `kmem_cache_alloc_from_sheaf`, `kmem_cache_refill_sheaf`,
//! `kmem_cache_return_sheaf`). Bonwick's magazines and depot (1994, 2001) are the ancestors
//! of the sheaf and the barn. This crate renders the design in userspace Rust; the code is
//! its own.
//!
//! # Layers, and where each states its invariants
//!
//! Each invariant is written once, in the docs of the (private) module that holds the data:
//!
//! - **Sheaf** (`sheaf`): an array of free objects with its size and capacity, owned by one
//!   holder at a time; the capacity-0 sentinel. The header is 16 bytes, so the kernel-style
//!   default capacity (60 pointers below 256-byte objects) fills a 512-byte allocation.
//! - **Slot** (`slot`, `SlotSheaves`): the shape of `main`, `spare` and `rcu_free`, and which
//!   party may touch them under each strategy.
//! - **Barn** (`barn`): its limits, and what full and empty mean there.
//! - **Cache** (`cache_core::accounting`): the accounting equation. At a quiescent point every
//!   object the slabs count in use is live (handed out, reserved in a prefilled sheaf, or
//!   deferred and not yet past its grace period) or cached in a slot's or a barn's sheaf;
//!   [`Cache::check_invariants`](crate::Cache::check_invariants) checks it.
//! - **Slab** (crate `slab`, module `pool`): each slab's count of objects in use, free and
//!   never carved.
//!
//! # Userspace differences from the kernel
//!
//! - The kernel disables preemption and takes a CPU-local trylock; here the CPU slot's
//!   try-lock is taken by a restartable sequence (`slab::rseq`: a load and a store that the
//!   kernel aborts if the thread is preempted or migrates in between), or by one atomic
//!   compare-exchange where the kernel offers no rseq membarrier. A thread that finds its
//!   slot held (another thread was preempted holding it, or migrated away holding it) goes
//!   straight to the slabs instead of waiting.
//! - Grace periods come from `crossbeam-epoch`'s default collector, which
//!   [`object_alloc::rcu::read`] pins; full `rcu_free` sheaves are handed over four to one
//!   deferred callback, which runs on whichever thread collects (the kernel runs an RCU
//!   callback on the CPU that queued it).
//! - Frees do not check the object's node: an object freed on another node's CPU joins that
//!   CPU's sheaves (the kernel sends remote objects straight to their slab).
//! - Slot refills from the slabs' free objects and flushes are done with the slot held (the
//!   kernel drops its lock around them); other threads on that CPU take the slow path
//!   meanwhile, which never blocks. Only the page source is kept outside the slot, as the
//!   kernel keeps its page allocator: a refill that needs a new slab releases the slot
//!   first, and a flush queues the slabs it empties until the slot is released.
