//! `fork()` in a multithreaded process: every registered lock is taken before the fork and
//! released on both sides, so that the child finds each structure consistent.
//!
//! Only the thread that calls `fork` exists in the child. Whatever the other threads held at
//! that instant (a node mutex, a per-CPU slot lock, a sheaf being swapped) would stay held, or
//! half-written, for ever. So the structures that allocators share between threads register
//! here ([`register`]), and the first registration installs `pthread_atfork` handlers
//! (a process that never creates a pool or a cache installs nothing and pays nothing):
//!
//! 1. **Prepare**, on the forking thread. With the registry's own mutex held throughout
//!    (so nothing registers or unregisters meanwhile):
//!    - *Per-CPU slot locks* ([`AtFork::slot_locks`]) first, because an operation holding a
//!      slot goes on to take mutexes. Every free lock is marked [`REMOTE`] with a
//!      compare-exchange and, for restartable-sequence locks, one rseq membarrier for all of
//!      them aborts any sequence that was about to commit over a mark; marks that survive are
//!      held. Busy locks are retried (their holders are inside short operations) until
//!      [`SLOT_WAIT`] has passed. The wait is bounded because a holder may be waiting for
//!      something prepare already holds (a page source that creates a pool, or that shrinks
//!      another cache), and because the forking thread may itself hold a slot: when `fork` is
//!      called from inside a page source ([`in_page_source`]), prepare does not wait at all.
//!    - *Mutexes* ([`AtFork::lock_all`]): pool node locks, barns, per-thread registries.
//!      Each is a leaf (no thread waits for anything while holding one), so any order is free
//!      of deadlock; then the process-wide remote-locker mutex of `rseq`.
//! 2. **Parent**: releases everything.
//! 3. **Child**: releases everything, then asks each registered structure to repair what
//!    refers to threads that are gone ([`AtFork::child`]): a slot lock prepare could not take
//!    was held by another thread, whose half-finished update must never be read (the owner
//!    resets or abandons it, see [`ChildFork`]).
//!
//! Objects that were in the hands of other threads at the fork (handed out, or in flight
//! inside an operation) are lost to the child: they are never freed there, and never handed
//! out twice.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use crate::rseq::{FREE, REMOTE, REMOTE_LOCKERS};

/// How long prepare waits for per-CPU slot locks held by other threads before it forks
/// without them (their slots are then reset in the child, and their cached objects lost to
/// it). Short: a holder may be descheduled, and a program that forks to run a helper should
/// not wait for it.
pub const SLOT_WAIT: Duration = Duration::from_millis(1);

/// A per-CPU slot lock for prepare to take: a byte in `rseq`'s states.
#[derive(Clone, Copy, Debug)]
pub struct SlotLock {
    /// The lock; it stays alive while its owner is registered.
    pub lock: *const AtomicU8,
    /// The CPU the lock belongs to.
    pub cpu: u32,
    /// Whether threads on `cpu` take it with a restartable sequence (a mark must then be
    /// confirmed by an rseq membarrier), rather than with a compare-exchange.
    pub rseq: bool,
}

/// A spin lock for prepare to take with the slot locks: a flag set by its holder
/// (compare-exchange `false -> true`) and cleared with a release store.
#[derive(Clone, Copy, Debug)]
pub struct FlagLock(pub *const AtomicBool);

/// What the child handler tells each registered structure.
#[derive(Clone, Copy, Debug)]
pub struct ChildFork {
    /// The forking thread was inside a page source call: it may itself hold slot locks, so a
    /// held lock may belong to it (it will release it) rather than to a thread that is gone.
    /// A structure must then leave such locks to their holder ([`crate::rseq::ABANDONED`])
    /// instead of resetting them.
    pub in_page_source: bool,
}

/// A structure that must be consistent in a child process.
///
/// Implementors take every lock they own in [`AtFork::lock_all`] and keep them with
/// [`Held::hold`]; the registry releases them after the fork.
pub trait AtFork: Sync {
    /// Appends the per-CPU slot locks prepare must take (first, before any mutex).
    fn slot_locks(&self, out: &mut Vec<SlotLock>) {
        let _ = out;
    }

    /// Appends spin locks prepare must take with the slot locks (held across calls that take
    /// mutexes, so taken before any). In the child, one still set was held by a thread that
    /// is gone (or by the forking thread, see [`ChildFork::in_page_source`]).
    fn flag_locks(&self, out: &mut Vec<FlagLock>) {
        let _ = out;
    }

    /// Locks every mutex of the structure, in the order its operations nest them, and hands
    /// the guards to `held`.
    fn lock_all(&self, held: &mut Held);

    /// In the child, after every lock was released and before any other code runs: repairs
    /// what refers to other threads. Must not register or unregister anything.
    fn child(&self, fork: ChildFork) {
        let _ = fork;
    }
}

/// Guards kept from prepare until after the fork.
#[derive(Default)]
pub struct Held {
    guards: Vec<Box<dyn Any>>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("guards", &self.guards.len())
            .finish()
    }
}

impl Held {
    /// Keeps `guard` until the fork is over (released in reverse order).
    ///
    /// # Safety
    ///
    /// - The mutex belongs to a structure registered with [`register`] (or is a `static`),
    ///   which therefore stays alive until the registry releases the guard.
    pub unsafe fn hold<T: 'static + ?Sized>(&mut self, guard: MutexGuard<'_, T>) {
        // SAFETY: only the lifetime changes. The structure cannot be dropped while the guard
        // is kept: it unregisters first, which waits for the registry mutex that prepare
        // holds until the guards are dropped (the caller's obligation).
        let guard: MutexGuard<'static, T> = unsafe { std::mem::transmute(guard) };
        self.guards.push(Box::new(guard));
    }

    fn release(&mut self) {
        while let Some(guard) = self.guards.pop() {
            drop(guard);
        }
    }
}

struct Entry {
    key: usize,
    object: *const (dyn AtFork + 'static),
}

struct Registry {
    entries: Vec<Entry>,
}

// SAFETY: the pointers name `Sync` structures that stay alive while registered (the
// obligation of `register`); the registry only calls their `&self` methods.
unsafe impl Send for Registry {}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    entries: Vec::new(),
});
static INSTALL: Once = Once::new();

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers `object` to take part in every later fork, and installs the handlers on the
/// first call in the process.
///
/// # Safety
///
/// - `object` stays at this address, alive, until [`unregister`] is called with it, which
///   its owner does first thing when it is dropped (before touching anything the handlers
///   use).
pub unsafe fn register(object: &(dyn AtFork + 'static)) {
    INSTALL.call_once(|| {
        // SAFETY: the handlers are `extern "C"` functions with no arguments, as required.
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        // Without handlers a child may find a lock held for ever: but only a child, and
        // only if the process forks, so this is no reason to refuse the structure.
        debug_assert_eq!(rc, 0, "pthread_atfork failed");
    });
    let key = (object as *const dyn AtFork).cast::<()>() as usize;
    registry().entries.push(Entry {
        key,
        object: object as *const _,
    });
}

/// Removes `object` from the registry (no-op if it is not there). Waits while a fork is being
/// prepared.
pub fn unregister(object: &(dyn AtFork + 'static)) {
    if !INSTALL.is_completed() {
        return;
    }
    let key = (object as *const dyn AtFork).cast::<()>() as usize;
    let mut registry = registry();
    if let Some(at) = registry.entries.iter().position(|entry| entry.key == key) {
        registry.entries.swap_remove(at);
    }
}

thread_local! {
    /// Page source calls in progress on this thread (nested through re-entry).
    static PAGE_SOURCE_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// What prepare took, for the parent or child handler (all three run on one thread).
    static IN_FORK: RefCell<Option<InFork>> = const { RefCell::new(None) };
}

/// Marks the calling thread as inside a page source call while alive.
#[derive(Debug)]
pub struct PageSourceCall(());

impl PageSourceCall {
    /// Starts a page source call (wrap every `alloc_chunk` and `free_chunk` an allocator
    /// makes while it may hold a slot).
    #[inline]
    pub fn enter() -> Self {
        PAGE_SOURCE_DEPTH.with(|depth| depth.set(depth.get() + 1));
        PageSourceCall(())
    }
}

impl Drop for PageSourceCall {
    #[inline]
    fn drop(&mut self) {
        PAGE_SOURCE_DEPTH.with(|depth| depth.set(depth.get() - 1));
    }
}

/// Whether the calling thread is inside a page source call (see [`PageSourceCall`]).
pub fn in_page_source() -> bool {
    PAGE_SOURCE_DEPTH.with(|depth| depth.get() > 0)
}

struct InFork {
    registry: MutexGuard<'static, Registry>,
    remote: MutexGuard<'static, ()>,
    held: Held,
    /// Slot and flag locks prepare holds.
    taken: Vec<Taken>,
    in_page_source: bool,
}

extern "C" fn prepare() {
    let registry = registry();
    let in_page_source = in_page_source();
    let (mut locks, mut flags) = (Vec::new(), Vec::new());
    for entry in registry.entries.iter() {
        // SAFETY: registered, so alive (the registry mutex is held).
        let object = unsafe { &*entry.object };
        object.slot_locks(&mut locks);
        object.flag_locks(&mut flags);
    }
    let wait = if in_page_source {
        Duration::ZERO
    } else {
        SLOT_WAIT
    };
    let taken = take_slot_locks(&locks, &flags, wait);
    let mut held = Held::default();
    for entry in registry.entries.iter() {
        // SAFETY: as above.
        unsafe { &*entry.object }.lock_all(&mut held);
    }
    let remote = REMOTE_LOCKERS.lock().unwrap_or_else(|p| p.into_inner());
    IN_FORK.with(|state| {
        *state.borrow_mut() = Some(InFork {
            registry,
            remote,
            held,
            taken,
            in_page_source,
        })
    });
}

#[derive(Clone, Copy)]
enum Taken {
    Slot(*const AtomicU8),
    Flag(*const AtomicBool),
}

/// Marks and confirms as many of `locks` (and takes as many of `flags`) as it can within
/// `wait`; returns those held.
fn take_slot_locks(locks: &[SlotLock], flags: &[FlagLock], wait: Duration) -> Vec<Taken> {
    let deadline = Instant::now() + wait;
    let mut pending: Vec<SlotLock> = locks.to_vec();
    let mut pending_flags: Vec<FlagLock> = flags.to_vec();
    let mut taken = Vec::with_capacity(locks.len() + flags.len());
    loop {
        pending_flags.retain(|flag| {
            // SAFETY: the lock's owner is registered, so the lock is alive.
            let lock = unsafe { &*flag.0 };
            let got = lock
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok();
            if got {
                taken.push(Taken::Flag(flag.0));
            }
            !got
        });
        let mut marked = Vec::new();
        {
            // Remote lockers of a lock are serialised (see `rseq`): a mark read back after the
            // barrier must be ours.
            let _serial = REMOTE_LOCKERS.lock().unwrap_or_else(|p| p.into_inner());
            pending.retain(|slot| {
                // SAFETY: the lock's owner is registered, so the lock is alive.
                let lock = unsafe { &*slot.lock };
                if lock
                    .compare_exchange(FREE, REMOTE, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    return true;
                }
                if slot.rseq {
                    marked.push(*slot);
                } else {
                    taken.push(Taken::Slot(slot.lock));
                }
                false
            });
            if !marked.is_empty() {
                let confirmed = rseq_barrier_all();
                for slot in marked {
                    // SAFETY: as above.
                    let lock_ref = unsafe { &*slot.lock };
                    if confirmed && lock_ref.load(Ordering::Acquire) == REMOTE {
                        taken.push(Taken::Slot(slot.lock));
                    } else {
                        // A sequence committed over the mark (the lock is its thread's), or
                        // without the barrier the mark proves nothing: take the mark back
                        // where it is still ours, and try again.
                        let _ = lock_ref.compare_exchange(
                            REMOTE,
                            FREE,
                            Ordering::Release,
                            Ordering::Relaxed,
                        );
                        pending.push(slot);
                    }
                }
            }
        }
        if (pending.is_empty() && pending_flags.is_empty()) || Instant::now() >= deadline {
            return taken;
        }
        std::thread::yield_now();
    }
}

/// One rseq membarrier on every CPU: every sequence in progress is aborted, and every later
/// one sees the marks. `false` if the kernel refused it.
fn rseq_barrier_all() -> bool {
    use rustix::thread::{MembarrierCommand, membarrier};
    if membarrier(MembarrierCommand::PrivateExpeditedRseq).is_ok() {
        return true;
    }
    let _ = membarrier(MembarrierCommand::RegisterPrivateExpeditedRseq);
    membarrier(MembarrierCommand::PrivateExpeditedRseq).is_ok()
}

fn finish() -> Option<(MutexGuard<'static, Registry>, bool)> {
    let InFork {
        registry,
        remote,
        mut held,
        taken,
        in_page_source,
    } = IN_FORK.with(|state| state.borrow_mut().take())?;
    held.release();
    drop(remote);
    for lock in taken {
        match lock {
            // SAFETY: the owner is registered (the registry guard is still held).
            Taken::Slot(lock) => unsafe { &*lock }.store(FREE, Ordering::Release),
            // SAFETY: as above.
            Taken::Flag(lock) => unsafe { &*lock }.store(false, Ordering::Release),
        }
    }
    Some((registry, in_page_source))
}

extern "C" fn parent() {
    drop(finish());
}

extern "C" fn child() {
    let Some((registry, in_page_source)) = finish() else {
        return;
    };
    let fork = ChildFork { in_page_source };
    for entry in registry.entries.iter() {
        // SAFETY: registered, so alive; only this thread exists.
        unsafe { &*entry.object }.child(fork);
    }
}

/// The outcome of [`in_child`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildOutcome {
    /// The child ran its body to the end and it returned `true`.
    Passed,
    /// The body returned `false` or panicked.
    Failed,
    /// The child did not finish in time and was killed.
    Hung,
}

/// Forks, runs `body` in the child, and reports how it ended; the child is killed after
/// `timeout`. For tests and conformance checks: the child never returns into the caller's
/// code (it leaves with `_exit`, writing one byte to a pipe first), and prints nothing.
pub fn in_child(timeout: Duration, body: impl FnOnce() -> bool) -> ChildOutcome {
    let mut fds = [0; 2];
    // SAFETY: `fds` is an array of two ints, as `pipe` requires.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe failed");
    let [read, write] = fds;
    // SAFETY: `fork` has no preconditions; the child only runs `body` and leaves by `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: closes our copy of the read end.
        unsafe { libc::close(read) };
        let passed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(false);
        let byte = [if passed { b'P' } else { b'F' }];
        // SAFETY: writes one byte from a live buffer, then leaves without running any of the
        // parent's exit-time code.
        unsafe {
            libc::write(write, byte.as_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    // SAFETY: closes the parent's copy of the write end.
    unsafe { libc::close(write) };
    let mut poll = libc::pollfd {
        fd: read,
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + timeout;
    let mut byte = MaybeUninit::<u8>::new(0);
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // SAFETY: one valid `pollfd`.
        let ready = unsafe { libc::poll(&mut poll, 1, left.as_millis() as libc::c_int) };
        if ready > 0 {
            // SAFETY: reads at most one byte into `byte`.
            let n = unsafe { libc::read(read, byte.as_mut_ptr().cast(), 1) };
            // SAFETY: written by `read` when it returned 1; initialised to 0 otherwise.
            let byte = unsafe { byte.assume_init() };
            break if n == 1 && byte == b'P' {
                ChildOutcome::Passed
            } else {
                ChildOutcome::Failed
            };
        }
        if ready == 0 && left.is_zero() {
            // SAFETY: `pid` is our child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            break ChildOutcome::Hung;
        }
    };
    let mut status = 0;
    // SAFETY: reaps our child; `status` is a valid int.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
        libc::close(read);
    }
    outcome
}
