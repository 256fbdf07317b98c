//! Import of `strace -f -e trace=memory` (or `trace=memory,process`) output as a [`Trace`].
//!
//! Each line of a log is one of: a complete call (`mmap(NULL, 8192, ...) = 0x7f..`), the first
//! half of an interrupted one (`... <unfinished ...>`), its second half
//! (`<... mmap resumed>...) = ...`), a signal (`--- SIGCHLD ... ---`), or a task's end
//! (`+++ exited with 0 +++`). Lines may start with a pid (`123 ` from `-f -o`, `[pid 123] `
//! on a terminal) and a timestamp (`-t`, `-tt`, `-ttt`); without a pid the log is of one
//! process.
//!
//! What becomes a record:
//!
//! - `mmap`/`mmap2` that succeeded: the returned range, length rounded up to pages (with
//!   `MAP_FIXED` it replaces whatever was there, as the store does);
//! - `munmap`: only when part of the range is mapped (unmapping nothing does not touch the
//!   kernel's tree either); `mprotect`/`pkey_mprotect`;
//! - `brk`: the first result sets the heap start; each later result that moves the break is
//!   a `brk` record (a failed `brk` returns the old break, so it changes nothing);
//! - `mremap`: an `munmap` of the old range and an `mmap` of the new one with the old
//!   protection;
//! - process events, when the log has them: `clone`/`clone3`/`fork` without `CLONE_VM` are a
//!   `fork` of the caller's space; with `CLONE_VM` (threads, `vfork`, `posix_spawn`) the child
//!   shares the caller's space; a successful `execve` gives the task a new empty space; a
//!   space ends (`exit`) when its last task ends or leaves it. Without process events, every
//!   pid has its own space.
//!
//! Failed calls (`= -1 ENOMEM (...)`) are skipped; other system calls (`madvise`, `wait4`,
//! ...) are counted and ignored; lines that cannot be read are counted, never fatal. A task
//! whose first lines come before the `clone` that created it returned gets a provisional
//! space, replaced by the right one when the `clone` returns (unless the task ran `execve`
//! meanwhile, as a `vfork` child does: then the space it got from `execve` is its own). Mappings the kernel made at
//! `execve` (the program, the loader, the stack) never appear in a log; an `mprotect` of them
//! stores a mapping where the replay had a gap.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::RangeModel;
use crate::ops::{Op, PAGE, Prot};
use crate::trace::{Trace, TraceEvent, TraceRecord};

/// What an import saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportStats {
    /// Lines read.
    pub lines: u64,
    /// Complete calls by system call name (an interrupted call counts once, when resumed).
    pub calls: BTreeMap<String, u64>,
    /// Memory or process calls that failed and were skipped.
    pub failed: u64,
    /// Calls of other system calls, ignored.
    pub ignored: u64,
    /// `munmap` calls over ranges with nothing mapped, dropped.
    pub unmapped_munmaps: u64,
    /// Lines that could not be read (and `resumed` halves without their start).
    pub unreadable: u64,
    /// Address spaces.
    pub spaces: u64,
    /// Records written.
    pub records: u64,
    /// Distinct tasks (pids) whose calls the log holds; a log without pids counts as one.
    pub tasks: u64,
}

/// The system calls that create tasks or give one a new address space.
const PROCESS_CALLS: [&str; 6] = ["clone", "clone3", "fork", "vfork", "execve", "execveat"];

impl ImportStats {
    /// Process events (`clone`, `fork`, `execve`, ...) the log holds, failed ones included.
    pub fn process_events(&self) -> u64 {
        PROCESS_CALLS
            .iter()
            .filter_map(|name| self.calls.get(*name))
            .sum()
    }

    /// Whether the log had several tasks but no process event to tell which of them share
    /// an address space (`strace -e trace=memory` without `process`): each task then got a
    /// space of its own, so the threads of one process replay as separate processes.
    pub fn tasks_ungrouped(&self) -> bool {
        self.tasks > 1 && self.process_events() == 0
    }
}

impl fmt::Display for ImportStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lines, {} records in {} address spaces; {} failed calls skipped, {} other calls \
             ignored, {} munmaps of unmapped ranges dropped, {} unreadable lines",
            self.lines,
            self.records,
            self.spaces,
            self.failed,
            self.ignored,
            self.unmapped_munmaps,
            self.unreadable
        )
    }
}

/// An imported trace and what the import saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Import {
    /// The trace.
    pub trace: Trace,
    /// The counts.
    pub stats: ImportStats,
}

#[derive(Clone, Debug, Default)]
struct SpaceState {
    mappings: RangeModel,
    heap: Option<(u64, u64)>,
    tasks: u32,
}

#[derive(Debug, Default)]
struct Importer {
    task_space: HashMap<u32, u32>,
    /// Tasks whose space was made up because they were seen before their creation returned.
    provisional: HashSet<u32>,
    spaces: HashMap<u32, SpaceState>,
    pending: HashMap<u32, String>,
    /// Every pid that made a call.
    seen: HashSet<u32>,
    next_space: u32,
    records: Vec<TraceRecord>,
    stats: ImportStats,
}

/// Converts strace output to a trace. Never fails: what cannot be used is counted.
pub fn import(log: &str) -> Import {
    let mut importer = Importer::default();
    for line in log.lines() {
        importer.stats.lines += 1;
        importer.line(line);
    }
    importer.stats.records = importer.records.len() as u64;
    importer.stats.spaces = u64::from(importer.next_space);
    importer.stats.tasks = importer.seen.len() as u64;
    Import {
        trace: Trace {
            records: importer.records,
        },
        stats: importer.stats,
    }
}

/// Splits off `[pid N] ` or `N ` and a timestamp; returns the pid (0 without one) and the rest.
fn split_prefix(line: &str) -> (u32, &str) {
    let mut rest = line.trim_start();
    let mut pid = 0;
    if let Some(after) = rest.strip_prefix("[pid")
        && let Some(end) = after.find(']')
        && let Ok(n) = after[..end].trim().parse()
    {
        pid = n;
        rest = after[end + 1..].trim_start();
    } else {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0
            && rest[digits..].starts_with([' ', '\t'])
            && let Ok(n) = rest[..digits].parse()
        {
            pid = n;
            rest = rest[digits..].trim_start();
        }
    }
    let token_end = rest.find([' ', '\t']).unwrap_or(rest.len());
    let token = &rest[..token_end];
    if !token.is_empty()
        && token.contains([':', '.'])
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b'.')
    {
        rest = rest[token_end..].trim_start();
    }
    (pid, rest)
}

/// A complete call: name, top-level arguments, and the first token of the result.
struct Call<'l> {
    name: &'l str,
    args: Vec<&'l str>,
    result: &'l str,
}

fn parse_call(text: &str) -> Option<Call<'_>> {
    let open = text.find('(')?;
    let name = text[..open].trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let bytes = text.as_bytes();
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    let mut args = Vec::new();
    let mut arg_start = open + 1;
    let mut close = None;
    for (i, &c) in bytes.iter().enumerate().skip(open + 1) {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => quoted = true,
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' if depth > 0 => depth -= 1,
            b')' => {
                close = Some(i);
                break;
            }
            b',' if depth == 0 => {
                args.push(text[arg_start..i].trim());
                arg_start = i + 1;
            }
            _ => {}
        }
    }
    let close = close?;
    let last = text[arg_start..close].trim();
    if !last.is_empty() || !args.is_empty() {
        args.push(last);
    }
    let after = text[close + 1..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let result = after.split_ascii_whitespace().next()?;
    Some(Call { name, args, result })
}

fn number(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "NULL" {
        return Some(0);
    }
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn prot_of(s: &str) -> Prot {
    if let Some(n) = number(s) {
        return Prot((n & 7) as u8);
    }
    let mut prot = 0;
    for flag in s.split('|') {
        prot |= match flag.trim() {
            "PROT_READ" => Prot::READ,
            "PROT_WRITE" => Prot::WRITE,
            "PROT_EXEC" => Prot::EXEC,
            _ => 0,
        };
    }
    Prot(prot)
}

fn pages(len: u64) -> u64 {
    len.div_ceil(PAGE).saturating_mul(PAGE)
}

impl Importer {
    fn line(&mut self, line: &str) {
        let (pid, rest) = split_prefix(line);
        if rest.is_empty() || rest.starts_with("---") {
            return;
        }
        if let Some(end) = rest.strip_prefix("+++") {
            if end.contains("exited") || end.contains("killed") {
                self.task_ends(pid);
            }
            return;
        }
        if rest.starts_with("strace:") || rest.starts_with("Process ") {
            return;
        }
        if let Some(resumed) = rest.strip_prefix("<...") {
            let Some(at) = resumed.find("resumed>") else {
                self.stats.unreadable += 1;
                return;
            };
            let Some(mut head) = self.pending.remove(&pid) else {
                self.stats.unreadable += 1;
                return;
            };
            head.push_str(&resumed[at + "resumed>".len()..]);
            self.complete(pid, &head);
            return;
        }
        if let Some(head) = rest.trim_end().strip_suffix("<unfinished ...>") {
            self.pending.insert(pid, head.to_owned());
            return;
        }
        self.complete(pid, rest);
    }

    fn complete(&mut self, pid: u32, text: &str) {
        let Some(call) = parse_call(text) else {
            self.stats.unreadable += 1;
            return;
        };
        *self.stats.calls.entry(call.name.to_owned()).or_default() += 1;
        self.seen.insert(pid);
        let known = matches!(
            call.name,
            "mmap"
                | "mmap2"
                | "munmap"
                | "mprotect"
                | "pkey_mprotect"
                | "brk"
                | "mremap"
                | "clone"
                | "clone3"
                | "fork"
                | "vfork"
                | "execve"
                | "execveat"
        );
        if !known {
            self.stats.ignored += 1;
            return;
        }
        if call.result.starts_with('-') || call.result == "?" {
            self.stats.failed += 1;
            return;
        }
        let Some(result) = number(call.result) else {
            self.stats.unreadable += 1;
            return;
        };
        let arg = |i: usize| call.args.get(i).copied().and_then(number);
        match call.name {
            "mmap" | "mmap2" => {
                let (Some(len), Some(prot)) = (arg(1), call.args.get(2)) else {
                    self.stats.unreadable += 1;
                    return;
                };
                let prot = prot_of(prot);
                self.op(
                    pid,
                    Op::Mmap {
                        start: result,
                        len: pages(len),
                        prot,
                    },
                );
            }
            "munmap" => {
                let (Some(start), Some(len)) = (arg(0), arg(1)) else {
                    self.stats.unreadable += 1;
                    return;
                };
                let space = self.space_of(pid);
                let len = pages(len);
                let end = start.saturating_add(len);
                if !self.spaces[&space].mappings.overlaps(start..end) {
                    self.stats.unmapped_munmaps += 1;
                    return;
                }
                self.op(pid, Op::Munmap { start, len });
            }
            "mprotect" | "pkey_mprotect" => {
                let (Some(start), Some(len), Some(prot)) = (arg(0), arg(1), call.args.get(2))
                else {
                    self.stats.unreadable += 1;
                    return;
                };
                let prot = prot_of(prot);
                self.op(
                    pid,
                    Op::Mprotect {
                        start,
                        len: pages(len),
                        prot,
                    },
                );
            }
            "brk" => self.brk(pid, result),
            "mremap" => {
                let (Some(old), Some(old_len), Some(new_len)) = (arg(0), arg(1), arg(2)) else {
                    self.stats.unreadable += 1;
                    return;
                };
                let space = self.space_of(pid);
                let prot = self.spaces[&space]
                    .mappings
                    .lookup(old)
                    .map_or(Prot(Prot::READ | Prot::WRITE), |v| {
                        Prot(((v.get() - 1) & 7) as u8)
                    });
                self.op(
                    pid,
                    Op::Munmap {
                        start: old,
                        len: pages(old_len),
                    },
                );
                self.op(
                    pid,
                    Op::Mmap {
                        start: result,
                        len: pages(new_len),
                        prot,
                    },
                );
            }
            "clone" | "clone3" | "fork" | "vfork" => {
                let Ok(child) = u32::try_from(result) else {
                    self.stats.unreadable += 1;
                    return;
                };
                let shares =
                    call.name == "vfork" || call.args.iter().any(|a| a.contains("CLONE_VM"));
                self.task_created(pid, child, shares);
            }
            "execve" | "execveat" => {
                self.provisional.remove(&pid);
                self.leave(pid);
                let space = self.new_space();
                self.join(pid, space);
            }
            _ => unreachable!("`known` lists the names handled here"),
        }
    }

    fn new_space(&mut self) -> u32 {
        let id = self.next_space;
        self.next_space += 1;
        self.spaces.insert(id, SpaceState::default());
        id
    }

    fn join(&mut self, pid: u32, space: u32) {
        self.task_space.insert(pid, space);
        if let Some(state) = self.spaces.get_mut(&space) {
            state.tasks += 1;
        }
    }

    /// The task leaves its space; the space ends with its last task.
    fn leave(&mut self, pid: u32) {
        let Some(space) = self.task_space.remove(&pid) else {
            return;
        };
        let Some(state) = self.spaces.get_mut(&space) else {
            return;
        };
        state.tasks -= 1;
        if state.tasks == 0 {
            self.spaces.remove(&space);
            self.records.push(TraceRecord {
                space,
                event: TraceEvent::Exit,
            });
        }
    }

    fn space_of(&mut self, pid: u32) -> u32 {
        if let Some(&space) = self.task_space.get(&pid) {
            return space;
        }
        let space = self.new_space();
        self.join(pid, space);
        self.provisional.insert(pid);
        space
    }

    fn task_created(&mut self, parent: u32, child: u32, shares: bool) {
        if self.task_space.contains_key(&child) {
            if !self.provisional.remove(&child) {
                // The child ran `execve` before this result came back: it has its own space.
                return;
            }
            // Its first lines came before this result: drop the provisional space.
            self.leave(child);
        }
        let parent_space = self.space_of(parent);
        if shares {
            self.join(child, parent_space);
            return;
        }
        let mut copy = self.spaces[&parent_space].clone();
        copy.tasks = 0;
        let id = self.new_space();
        self.spaces.insert(id, copy);
        self.records.push(TraceRecord {
            space: parent_space,
            event: TraceEvent::Fork { child: id },
        });
        self.join(child, id);
    }

    fn task_ends(&mut self, pid: u32) {
        self.pending.remove(&pid);
        self.provisional.remove(&pid);
        self.leave(pid);
    }

    fn brk(&mut self, pid: u32, result: u64) {
        let space = self.space_of(pid);
        let state = self.spaces.get_mut(&space).expect("space_of created it");
        match state.heap {
            None => state.heap = Some((result, result)),
            Some((start, end)) => {
                if result == end || result < start {
                    return;
                }
                state.heap = Some((start, result));
                self.op(
                    pid,
                    Op::Brk {
                        start,
                        old_end: end,
                        new_end: result,
                    },
                );
            }
        }
    }

    fn op(&mut self, pid: u32, op: Op) {
        let space = self.space_of(pid);
        if let Some((range, value)) = op.store() {
            self.spaces
                .get_mut(&space)
                .expect("space_of created it")
                .mappings
                .store(range, value);
        }
        self.records.push(TraceRecord {
            space,
            event: TraceEvent::Op(op),
        });
    }
}
