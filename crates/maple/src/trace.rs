//! The trace format: address-space operations of several processes, one per line.
//!
//! ```text
//! sheaftrace 1
//! # comments and blank lines are ignored
//! <space> mmap <start> <len> <prot>       map start..start+len (replacing what was there)
//! <space> munmap <start> <len>            unmap start..start+len
//! <space> mprotect <start> <len> <prot>   new protection over start..start+len
//! <space> brk <start> <old-end> <new-end> the heap start..old-end becomes start..new-end
//! <space> fork <child>                    space <child> starts as a copy of <space>
//! <space> exit                            space <space> ends
//! ```
//!
//! `<space>` and `<child>` are decimal address-space ids (spaces are created empty on first
//! use); addresses and lengths are hexadecimal, with or without `0x`; `<prot>` is `rwx` with
//! `-` for a missing right (`r-x`, `---`). The header line is optional. Parsing reports the
//! first bad line with its number, the field and what was expected.

use std::fmt::{self, Write as _};

use crate::ops::{Op, Prot};

/// The current format version (the header is `sheaftrace 1`).
pub const TRACE_VERSION: u32 = 1;

/// What happens in a trace record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// An operation on the space.
    Op(Op),
    /// A new space `child`, a copy of this one (`fork`, `clone` without `CLONE_VM`).
    Fork {
        /// The new space's id.
        child: u32,
    },
    /// The space ends (its last task exited or replaced its image).
    Exit,
}

/// One line of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    /// Address-space id.
    pub space: u32,
    /// What happens.
    pub event: TraceEvent,
}

/// A parsed trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// The records, in order.
    pub records: Vec<TraceRecord>,
}

/// A bad line: its number (from 1), and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trace line {line}: {message}")]
pub struct TraceError {
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong, naming the field and the expected form.
    pub message: String,
}

fn hex(field: &str, s: Option<&str>) -> Result<u64, String> {
    let s = s.ok_or_else(|| format!("missing {field} (hexadecimal)"))?;
    let digits = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(digits, 16)
        .map_err(|_| format!("{field} `{s}` is not a hexadecimal number"))
}

fn id(field: &str, s: Option<&str>) -> Result<u32, String> {
    let s = s.ok_or_else(|| format!("missing {field} (decimal id)"))?;
    s.parse()
        .map_err(|_| format!("{field} `{s}` is not a decimal id below 2^32"))
}

fn prot(s: Option<&str>) -> Result<Prot, String> {
    let s = s.ok_or("missing prot (`rwx` form, e.g. `r-x`)")?;
    Prot::from_letters(s)
        .ok_or_else(|| format!("prot `{s}` is not of the `rwx` form (e.g. `r-x`, `---`)"))
}

fn range_end(start: u64, len: u64) -> Result<(), String> {
    start
        .checked_add(len)
        .map(|_| ())
        .ok_or_else(|| format!("range {start:#x} + {len:#x} overflows 64 bits"))
}

impl Trace {
    /// Parses a trace.
    pub fn parse(text: &str) -> Result<Trace, TraceError> {
        let mut records = Vec::new();
        let mut seen_content = false;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |message: String| TraceError {
                line: n + 1,
                message,
            };
            let mut fields = line.split_ascii_whitespace();
            let first = fields.next().expect("non-empty line");
            if first == "sheaftrace" {
                if seen_content {
                    return Err(err("the `sheaftrace` header must come first".into()));
                }
                let version = fields.next().unwrap_or("");
                if version != TRACE_VERSION.to_string() {
                    return Err(err(format!(
                        "unsupported version `{version}`, expected {TRACE_VERSION}"
                    )));
                }
                seen_content = true;
                continue;
            }
            seen_content = true;
            let record = Self::parse_record(first, &mut fields).map_err(err)?;
            if let Some(extra) = fields.next() {
                return Err(err(format!("unexpected field `{extra}` at the end")));
            }
            records.push(record);
        }
        Ok(Trace { records })
    }

    fn parse_record<'s>(
        first: &str,
        fields: &mut impl Iterator<Item = &'s str>,
    ) -> Result<TraceRecord, String> {
        let space = id("space", Some(first))?;
        let verb = fields
            .next()
            .ok_or("missing operation (mmap, munmap, mprotect, brk, fork, exit)")?;
        let event = match verb {
            "mmap" | "mprotect" => {
                let start = hex("start", fields.next())?;
                let len = hex("len", fields.next())?;
                range_end(start, len)?;
                let prot = prot(fields.next())?;
                TraceEvent::Op(if verb == "mmap" {
                    Op::Mmap { start, len, prot }
                } else {
                    Op::Mprotect { start, len, prot }
                })
            }
            "munmap" => {
                let start = hex("start", fields.next())?;
                let len = hex("len", fields.next())?;
                range_end(start, len)?;
                TraceEvent::Op(Op::Munmap { start, len })
            }
            "brk" => {
                let start = hex("start", fields.next())?;
                let old_end = hex("old-end", fields.next())?;
                let new_end = hex("new-end", fields.next())?;
                if old_end < start || new_end < start {
                    return Err(format!(
                        "brk ends {old_end:#x} and {new_end:#x} must not lie below the heap start {start:#x}"
                    ));
                }
                TraceEvent::Op(Op::Brk {
                    start,
                    old_end,
                    new_end,
                })
            }
            "fork" => TraceEvent::Fork {
                child: id("child", fields.next())?,
            },
            "exit" => TraceEvent::Exit,
            other => {
                return Err(format!(
                    "unknown operation `{other}`, expected mmap, munmap, mprotect, brk, fork or exit"
                ));
            }
        };
        Ok(TraceRecord { space, event })
    }

    /// The operations of the trace, in order, without space ids or process events.
    pub fn ops(&self) -> impl Iterator<Item = &Op> + '_ {
        self.records.iter().filter_map(|r| match &r.event {
            TraceEvent::Op(op) => Some(op),
            _ => None,
        })
    }
}

impl fmt::Display for TraceRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.space;
        match self.event {
            TraceEvent::Op(Op::Mmap { start, len, prot }) => {
                write!(f, "{s} mmap {start:x} {len:x} {}", prot.letters())
            }
            TraceEvent::Op(Op::Munmap { start, len }) => write!(f, "{s} munmap {start:x} {len:x}"),
            TraceEvent::Op(Op::Mprotect { start, len, prot }) => {
                write!(f, "{s} mprotect {start:x} {len:x} {}", prot.letters())
            }
            TraceEvent::Op(Op::Brk {
                start,
                old_end,
                new_end,
            }) => write!(f, "{s} brk {start:x} {old_end:x} {new_end:x}"),
            TraceEvent::Fork { child } => write!(f, "{s} fork {child}"),
            TraceEvent::Exit => write!(f, "{s} exit"),
        }
    }
}

impl fmt::Display for Trace {
    /// The text form, header first; [`Trace::parse`] reads it back unchanged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sheaftrace {TRACE_VERSION}")?;
        let mut line = String::new();
        for record in &self.records {
            line.clear();
            write!(line, "{record}")?;
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}
