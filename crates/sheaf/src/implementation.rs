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
//! # Layers and invariants
//!
//! - **Sheaf** (`sheaf`): `size <= capacity`; entries `0..size` are free objects owned by
//!   whoever owns the sheaf. The header is 16 bytes, within `SHEAF_HEADER_BYTES`, so the
//!   kernel-style default capacity (60 pointers below 256-byte objects) fills a 512-byte
//!   allocation.
//! - **CPU slot** (`slot`): `main` is always a sheaf of the cache's capacity or the
//!   capacity-0 sentinel; `spare`, when present, is a sheaf of the cache's capacity holding
//!   any number of objects; `rcu_free`, when present, is never full (a full one waits in
//!   `rcu_waiting` until four can be handed over together). Only the slot's holder touches
//!   them.
//! - **Barn** (`barn`): at most `barn_max_full` full and `barn_max_empty` empty sheaves; full
//!   means exactly `capacity` objects. No oversize sheaf ever enters a slot or the barn.
//! - **Cache** (`cache_core`): at a quiescent point,
//!   `objects_in_use == live + in_slot_sheaves + in_barn`, where the slabs count
//!   `objects_in_use` and `live` counts objects handed out, reserved in outstanding
//!   prefilled sheaves, or deferred and not yet past their grace period.
//!   [`Cache::check_invariants`](crate::Cache::check_invariants) checks it.
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
//! - Slot refills and flushes are done with the slot held (the kernel drops its lock around
//!   them); other threads on that CPU take the slow path meanwhile, which never blocks.
