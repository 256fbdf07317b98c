//! Address-space operations and a seeded generator of them.
//!
//! Each [`Op`] is one write of the tree, as the kernel's `mm` code turns a system call into a
//! maple tree store: `mmap` stores the new mapping (over whatever it replaces, as `MAP_FIXED`
//! does), `munmap` stores a gap (spanning every mapping it touches, trimming the ones it
//! overlaps at either end), `mprotect` stores a new value over part of a mapping (splitting it
//! in up to three), and `brk` stores the grown heap range or a gap over the released tail.
//!
//! One operation is one write here. The kernel sometimes makes more: `mprotect` of the middle
//! of a mapping splits it with one store per split, and `munmap` also builds a small tree of
//! the detached mappings. The streams therefore show the tree's own pattern (reserve, use,
//! retire) per store, not the full count of stores per system call.
//!
//! [`OpGenerator`] produces a stream from a [`StreamSpec`] with a `splitmix64` generator, so a
//! seed gives the same stream everywhere. It keeps its own model of the address space to pick
//! realistic operands: `mmap` without an address finds the highest free gap below the mmap
//! base (top-down, as `get_unmapped_area` does), `munmap` and `mprotect` aim at existing
//! mappings. Generate the stream before timing: the generator's search is not part of the
//! workload.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{RangeModel, Value};

/// Page size of the generated address spaces.
pub const PAGE: u64 = 4096;
/// Top of the mmap area: `mmap` without an address searches downward from here.
pub const MMAP_BASE: u64 = 0x7f00_0000_0000;
/// Bottom of the mmap area (above the largest heap).
pub const MMAP_MIN: u64 = 0x6000_0000_0000;
/// Start of the generated heap (`brk` area).
pub const HEAP_START: u64 = 0x5555_5600_0000;

/// Protection bits of a mapping: [`Prot::READ`] | [`Prot::WRITE`] | [`Prot::EXEC`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Prot(pub u8);

impl Prot {
    /// `PROT_READ`.
    pub const READ: u8 = 1;
    /// `PROT_WRITE`.
    pub const WRITE: u8 = 2;
    /// `PROT_EXEC`.
    pub const EXEC: u8 = 4;

    /// The `rwx` form used in traces (`r-x`, `---`, ...).
    pub fn letters(self) -> String {
        let bit = |b: u8, c: char| if self.0 & b != 0 { c } else { '-' };
        [
            bit(Self::READ, 'r'),
            bit(Self::WRITE, 'w'),
            bit(Self::EXEC, 'x'),
        ]
        .iter()
        .collect()
    }

    /// Parses the `rwx` form; `None` unless it is three characters of `r`/`-`, `w`/`-`,
    /// `x`/`-`.
    pub fn from_letters(s: &str) -> Option<Prot> {
        let b = s.as_bytes();
        if b.len() != 3 {
            return None;
        }
        let mut prot = 0;
        for (&c, (want, bit)) in
            b.iter()
                .zip([(b'r', Self::READ), (b'w', Self::WRITE), (b'x', Self::EXEC)])
        {
            if c == want {
                prot |= bit;
            } else if c != b'-' {
                return None;
            }
        }
        Some(Prot(prot))
    }
}

/// The value the tree stores for a mapping: `1 + prot`, plus 8 for the heap (never zero).
pub fn mapping_value(prot: Prot, heap: bool) -> Value {
    Value::new(1 + u64::from(prot.0 & 7) + if heap { 8 } else { 0 }).expect("at least 1")
}

/// The kind of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Map a range.
    Mmap,
    /// Unmap a range.
    Munmap,
    /// Change the protection of a range.
    Mprotect,
    /// Move the end of the heap.
    Brk,
}

impl OpKind {
    /// Every kind, in index order.
    pub const ALL: [OpKind; 4] = [OpKind::Mmap, OpKind::Munmap, OpKind::Mprotect, OpKind::Brk];

    /// The system call's name.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Mmap => "mmap",
            OpKind::Munmap => "munmap",
            OpKind::Mprotect => "mprotect",
            OpKind::Brk => "brk",
        }
    }

    /// Index into [`OpKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One address-space operation; each is at most one tree write ([`Op::store`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Map `start..start + len` (replacing what was there).
    Mmap {
        /// Start address.
        start: u64,
        /// Length in bytes.
        len: u64,
        /// Protection.
        prot: Prot,
    },
    /// Unmap `start..start + len` (a no-op where nothing is mapped).
    Munmap {
        /// Start address.
        start: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Set the protection of `start..start + len`.
    Mprotect {
        /// Start address.
        start: u64,
        /// Length in bytes.
        len: u64,
        /// New protection.
        prot: Prot,
    },
    /// The heap `start..old_end` becomes `start..new_end`.
    Brk {
        /// Start of the heap.
        start: u64,
        /// End of the heap before.
        old_end: u64,
        /// End of the heap after.
        new_end: u64,
    },
}

impl Op {
    /// Its kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Mmap { .. } => OpKind::Mmap,
            Op::Munmap { .. } => OpKind::Munmap,
            Op::Mprotect { .. } => OpKind::Mprotect,
            Op::Brk { .. } => OpKind::Brk,
        }
    }

    /// The tree write it makes: the range and the value stored over it (`None` for a gap), or
    /// `None` when it changes nothing (an empty length, an unmoved `brk`).
    pub fn store(&self) -> Option<(Range<u64>, Option<Value>)> {
        let span = |start: u64, len: u64| start..start.saturating_add(len);
        let (range, value) = match *self {
            Op::Mmap { start, len, prot } => (span(start, len), Some(mapping_value(prot, false))),
            Op::Munmap { start, len } => (span(start, len), None),
            Op::Mprotect { start, len, prot } => {
                (span(start, len), Some(mapping_value(prot, false)))
            }
            Op::Brk {
                start,
                old_end,
                new_end,
            } => {
                if new_end > old_end {
                    (
                        start..new_end,
                        Some(mapping_value(Prot(Prot::READ | Prot::WRITE), true)),
                    )
                } else {
                    (new_end.max(start)..old_end, None)
                }
            }
        };
        (range.start < range.end).then_some((range, value))
    }
}

/// Relative weights of the operation kinds in a generated stream. In a spec, a weight left
/// out is 0 (and a mix left out is [`OpMix::default`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpMix {
    /// Weight of `mmap`.
    #[serde(default)]
    pub mmap: u32,
    /// Weight of `munmap`.
    #[serde(default)]
    pub munmap: u32,
    /// Weight of `mprotect`.
    #[serde(default)]
    pub mprotect: u32,
    /// Weight of `brk`.
    #[serde(default)]
    pub brk: u32,
}

impl Default for OpMix {
    fn default() -> Self {
        Self {
            mmap: 40,
            munmap: 35,
            mprotect: 20,
            brk: 5,
        }
    }
}

/// The parameters of a generated stream (embeddable in a workload spec; every field has a
/// default, unknown fields are refused).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSpec {
    /// Seed of the `splitmix64` generator.
    pub seed: u64,
    /// Operations to generate.
    pub ops: usize,
    /// Relative weights of the kinds.
    pub mix: OpMix,
    /// Smallest mapping, in pages.
    pub min_pages: u64,
    /// Largest mapping, in pages (lengths are log-uniform in between).
    pub max_pages: u64,
    /// Mappings the stream starts with (generated as the first `mmap`s of the stream).
    pub initial_mappings: usize,
    /// Most mappings in the mmap area: at the cap, `mmap` and `mprotect` become an `munmap`
    /// of whole mappings (one operation below the cap may still split up to two more).
    pub max_mappings: usize,
    /// Share of `mmap`s at a chosen address (`MAP_FIXED`), overlapping existing mappings.
    pub fixed_fraction: f64,
    /// Most mappings one `munmap` covers; it trims partially the first and last.
    pub munmap_max_ranges: usize,
    /// Largest heap, in pages.
    pub max_heap_pages: u64,
}

impl Default for StreamSpec {
    fn default() -> Self {
        Self {
            seed: 1,
            ops: 100_000,
            mix: OpMix::default(),
            min_pages: 1,
            max_pages: 256,
            initial_mappings: 200,
            max_mappings: 1000,
            fixed_fraction: 0.1,
            munmap_max_ranges: 3,
            max_heap_pages: 16 * 1024,
        }
    }
}

/// Why a [`StreamSpec`] is refused: the field and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream spec field `{field}`: {expected}")]
pub struct SpecError {
    /// The field.
    pub field: &'static str,
    /// What it must be.
    pub expected: &'static str,
}

impl StreamSpec {
    /// Where readers should look up addresses: the part of the mmap area below
    /// [`MMAP_BASE`] that the stream's mappings can occupy (`max_mappings` of `max_pages`,
    /// placed top-down), for [`run::reader_loop`](crate::run::reader_loop).
    pub fn lookup_range(&self) -> Range<u64> {
        let span = (self.max_mappings as u64)
            .saturating_mul(self.max_pages)
            .saturating_mul(PAGE)
            .min(MMAP_BASE - MMAP_MIN);
        MMAP_BASE - span..MMAP_BASE
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), SpecError> {
        let err = |field, expected| Err(SpecError { field, expected });
        let m = self.mix;
        if u64::from(m.mmap) + u64::from(m.munmap) + u64::from(m.mprotect) + u64::from(m.brk) == 0 {
            return err("mix", "at least one weight above 0");
        }
        if m.mmap == 0 {
            return err("mix.mmap", "above 0 (other operations need mappings)");
        }
        if self.min_pages == 0 || self.min_pages > self.max_pages {
            return err("min_pages", "at least 1 and at most max_pages");
        }
        if self.max_pages > (MMAP_BASE - MMAP_MIN) / PAGE / 1024 {
            return err("max_pages", "at most 1/1024 of the mmap area");
        }
        if self.max_mappings == 0 || self.initial_mappings > self.max_mappings {
            return err("max_mappings", "at least 1 and at least initial_mappings");
        }
        if !(0.0..=1.0).contains(&self.fixed_fraction) {
            return err("fixed_fraction", "between 0 and 1");
        }
        if self.munmap_max_ranges == 0 {
            return err("munmap_max_ranges", "at least 1");
        }
        if self.max_heap_pages == 0 || self.max_heap_pages > 1 << 30 {
            return err("max_heap_pages", "between 1 and 2^30");
        }
        Ok(())
    }
}

/// `splitmix64`: a small, fast, seedable generator (no dependency).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    #[inline]
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// `true` with probability `p`.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) < p
    }
}

/// Generates the operations of a [`StreamSpec`] one at a time.
#[derive(Clone, Debug)]
pub struct OpGenerator {
    spec: StreamSpec,
    rng: SplitMix64,
    area: RangeModel,
    heap_end: u64,
    emitted: usize,
}

impl OpGenerator {
    /// A generator for `spec`; refuses an invalid spec.
    pub fn new(spec: &StreamSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(Self {
            spec: spec.clone(),
            rng: SplitMix64::new(spec.seed),
            area: RangeModel::new(),
            heap_end: HEAP_START,
            emitted: 0,
        })
    }

    /// The mappings of the mmap area after the operations generated so far (the heap is
    /// `HEAP_START..heap_end`).
    pub fn area(&self) -> &RangeModel {
        &self.area
    }

    /// End of the heap after the operations generated so far.
    pub fn heap_end(&self) -> u64 {
        self.heap_end
    }

    fn pages(&mut self) -> u64 {
        let (lo, hi) = (self.spec.min_pages as f64, self.spec.max_pages as f64);
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let pages = (lo.ln() + u * (hi.ln() - lo.ln())).exp().round() as u64;
        pages.clamp(self.spec.min_pages, self.spec.max_pages)
    }

    fn prot(&mut self) -> Prot {
        const PROTS: [u8; 4] = [
            Prot::READ,
            Prot::READ | Prot::WRITE,
            Prot::READ | Prot::EXEC,
            0,
        ];
        Prot(PROTS[self.rng.below(4) as usize])
    }

    fn kind(&mut self) -> OpKind {
        if self.emitted < self.spec.initial_mappings {
            return OpKind::Mmap;
        }
        let m = self.spec.mix;
        let weights = [m.mmap, m.munmap, m.mprotect, m.brk];
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut pick = self.rng.below(total);
        let mut kind = OpKind::Mmap;
        for (k, &w) in OpKind::ALL.iter().zip(&weights) {
            if pick < u64::from(w) {
                kind = *k;
                break;
            }
            pick -= u64::from(w);
        }
        match kind {
            OpKind::Munmap | OpKind::Mprotect if self.area.is_empty() => OpKind::Mmap,
            OpKind::Mmap | OpKind::Mprotect if self.area.len() >= self.spec.max_mappings => {
                OpKind::Munmap
            }
            kind => kind,
        }
    }

    /// A random page-aligned address inside `range` (its start if it is one page).
    fn inside(&mut self, range: &Range<u64>) -> u64 {
        let pages = (range.end - range.start) / PAGE;
        range.start + self.rng.below(pages.max(1)) * PAGE
    }

    /// The next operation (the stream is endless; [`generate`] takes `spec.ops` of them).
    pub fn next_op(&mut self) -> Op {
        let op = match self.kind() {
            OpKind::Mmap => self.mmap(),
            OpKind::Munmap => self.munmap(),
            OpKind::Mprotect => self.mprotect(),
            OpKind::Brk => self.brk(),
        };
        if let Some((range, value)) = op.store()
            && !matches!(op, Op::Brk { .. })
        {
            self.area.store(range, value);
        }
        self.emitted += 1;
        op
    }

    fn mmap(&mut self) -> Op {
        let len = self.pages() * PAGE;
        let prot = self.prot();
        if !self.area.is_empty() && self.rng.chance(self.spec.fixed_fraction) {
            let n = self.rng.below(self.area.len() as u64) as usize;
            let (range, _) = self.area.nth(n).expect("n < len");
            let start = self.inside(&range);
            let len = len.min(MMAP_BASE - start);
            return Op::Mmap { start, len, prot };
        }
        match self.area.find_gap_rev(MMAP_MIN, MMAP_BASE, len) {
            Some(start) => Op::Mmap { start, len, prot },
            None => self.munmap(),
        }
    }

    fn munmap(&mut self) -> Op {
        let count = self.area.len() as u64;
        let first = self.rng.below(count) as usize;
        let span = self.rng.between(1, self.spec.munmap_max_ranges as u64) as usize;
        let last = (first + span - 1).min(count as usize - 1);
        let (head, _) = self.area.nth(first).expect("first < len");
        let (tail, _) = self.area.nth(last).expect("last < len");
        // Trimming can split a mapping in two: only below the cap.
        let trim = self.area.len() < self.spec.max_mappings;
        let start = if trim && self.rng.chance(0.5) {
            self.inside(&head)
        } else {
            head.start
        };
        let end = if trim && self.rng.chance(0.5) {
            self.inside(&tail) + PAGE
        } else {
            tail.end
        };
        let end = end.max(start + PAGE);
        Op::Munmap {
            start,
            len: end - start,
        }
    }

    fn mprotect(&mut self) -> Op {
        let n = self.rng.below(self.area.len() as u64) as usize;
        let (range, value) = self.area.nth(n).expect("n < len");
        let start = self.inside(&range);
        let end = self.inside(&(start..range.end)) + PAGE;
        let mut prot = self.prot();
        if mapping_value(prot, false) == value {
            prot = Prot(prot.0 ^ Prot::WRITE);
        }
        Op::Mprotect {
            start,
            len: end - start,
            prot,
        }
    }

    fn brk(&mut self) -> Op {
        let old_end = self.heap_end;
        let max_end = HEAP_START + self.spec.max_heap_pages * PAGE;
        let step = self.rng.between(1, 32) * PAGE;
        let grow = old_end == HEAP_START || (old_end + step <= max_end && self.rng.chance(0.6));
        let new_end = if grow {
            (old_end + step).min(max_end)
        } else {
            old_end.saturating_sub(step).max(HEAP_START)
        };
        self.heap_end = new_end;
        Op::Brk {
            start: HEAP_START,
            old_end,
            new_end,
        }
    }
}

/// The first `spec.ops` operations of `spec`'s stream; refuses an invalid spec.
pub fn generate(spec: &StreamSpec) -> Result<Vec<Op>, SpecError> {
    let mut generator = OpGenerator::new(spec)?;
    Ok((0..spec.ops).map(|_| generator.next_op()).collect())
}
