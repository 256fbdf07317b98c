//! The trace format, the strace importer, and replay.

use maple::ops::{Op, Prot};
use maple::strace::import;
use maple::{Trace, TraceEvent, TraceRecord, WriteConfig, WriteInfo, run};
use object_alloc::ObjectAlloc;

use crate::cache;

/// The shipped traces: name, raw strace log, converted trace.
const SHIPPED: [(&str, &str, &str); 2] = [
    (
        "python-sqlite-json",
        include_str!("../../../../workloads/traces/python-sqlite-json.strace"),
        include_str!("../../../../workloads/traces/python-sqlite-json.trace"),
    ),
    (
        "gcc-hello",
        include_str!("../../../../workloads/traces/gcc-hello.strace"),
        include_str!("../../../../workloads/traces/gcc-hello.trace"),
    ),
];

const RW: Prot = Prot(Prot::READ | Prot::WRITE);

fn op(space: u32, op: Op) -> TraceRecord {
    TraceRecord {
        space,
        event: TraceEvent::Op(op),
    }
}

#[test]
fn the_shipped_traces_round_trip_and_match_their_logs() {
    for (name, log, text) in SHIPPED {
        let trace = Trace::parse(text).unwrap();
        assert!(trace.records.len() > 200, "{name}");
        assert_eq!(trace.to_string(), text, "{name}");
        let imported = import(log);
        assert_eq!(
            imported.trace, trace,
            "the importer no longer reproduces {name}"
        );
        assert_eq!(imported.stats.unreadable, 0, "{name}: {}", imported.stats);
        assert!(
            imported.stats.failed > 0 && imported.stats.ignored > 0,
            "{name}"
        );
        assert!(imported.stats.spaces >= 5, "{name}: {}", imported.stats);
        let forks = trace
            .records
            .iter()
            .filter(|r| matches!(r.event, TraceEvent::Fork { .. }));
        assert_eq!(forks.count() > 0, name == "python-sqlite-json", "{name}");
    }
}

#[test]
fn the_shipped_traces_replay_against_the_model() {
    for (_, _, text) in SHIPPED {
        replay_checked(&Trace::parse(text).unwrap());
    }
}

fn replay_checked(trace: &Trace) {
    let alloc = cache();
    let mut writes = 0u64;
    let mut reserved = 0u64;
    let outcome = run::replay(
        &alloc,
        trace,
        WriteConfig::default(),
        true,
        &mut |_: &Op, info: &WriteInfo| {
            writes += 1;
            reserved += u64::from(info.reserved);
            assert!(
                info.used <= info.reserved && info.outside_reserve == 0,
                "{info:?}"
            );
        },
    )
    .unwrap();
    assert!(outcome.checked);
    assert_eq!(outcome.writes, writes);
    assert_eq!(outcome.records, trace.records.len() as u64);
    assert_eq!(outcome.stats.nodes_outside_reserve, 0);
    assert_eq!(outcome.exits, outcome.spaces, "{outcome:?}");
    assert!(reserved > 0);
    alloc.barrier();
    assert_eq!(alloc.live(), 0, "replay leaked nodes");
}

#[test]
fn bad_trace_lines_are_reported_with_their_number() {
    let cases = [
        (
            "0 mmap 1000 2000 rw-\n0 mmap zz 1000 r--\n",
            2,
            "start `zz`",
        ),
        ("# c\n\n0 mmap 1000 2000 rwz\n", 3, "prot `rwz`"),
        ("0 munmap 1000\n", 1, "missing len"),
        ("x munmap 1000 1000\n", 1, "space `x`"),
        ("0 mremap 1 2 3\n", 1, "unknown operation `mremap`"),
        ("0 exit now\n", 1, "unexpected field `now`"),
        ("0 brk 5000 4000 6000\n", 1, "below the heap start"),
        ("0 mmap ffffffffffffffff 2 r--\n", 1, "overflows"),
        ("0 exit\nsheaftrace 1\n", 2, "must come first"),
        ("sheaftrace 7\n", 1, "unsupported version"),
    ];
    for (text, line, needle) in cases {
        let err = Trace::parse(text).unwrap_err();
        assert_eq!(err.line, line, "{text:?}: {err}");
        assert!(err.to_string().contains(needle), "{text:?}: {err}");
    }
    let trace =
        Trace::parse("sheaftrace 1\n3 mmap 0x1000 0x2000 r-x # text\n3 fork 4\n4 exit\n").unwrap();
    assert_eq!(
        trace.records,
        vec![
            op(
                3,
                Op::Mmap {
                    start: 0x1000,
                    len: 0x2000,
                    prot: Prot(Prot::READ | Prot::EXEC)
                }
            ),
            TraceRecord {
                space: 3,
                event: TraceEvent::Fork { child: 4 }
            },
            TraceRecord {
                space: 4,
                event: TraceEvent::Exit
            },
        ]
    );
}

#[test]
fn strace_lines_of_every_shape_are_understood() {
    let log = "\
100 execve(\"/bin/x\", [\"x\"], 0x7ffd /* 3 vars */) = 0
100 brk(NULL)                         = 0x555000
100 mmap(NULL, 5000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
100 mmap(0x7f0000001000, 4096, PROT_READ, MAP_PRIVATE|MAP_FIXED, 3, 0) = 0x7f0000001000
100 mmap(NULL, 1099511627776, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = -1 ENOMEM (Cannot allocate memory)
100 munmap(0x7e0000000000, 4096)       = 0
100 brk(0x576000)                     = 0x576000
100 brk(0x999000)                     = 0x576000
[pid   100] mprotect(0x7f0000000000, 4096, PROT_READ <unfinished ...>
[pid   101] madvise(0x1000, 4096, MADV_DONTNEED) = 0
[pid   100] <... mprotect resumed>)   = 0
100 12:00:01.000001 mremap(0x7f0000000000, 4096, 8192, MREMAP_MAYMOVE) = 0x7f0000100000
100 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f) = 200
100 clone3({flags=CLONE_VM|CLONE_FS|CLONE_THREAD, stack=0x7f} => {parent_tid=[300]}, 88) = 300
300 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000200000
200 munmap(0x7f0000001000, 4096)      = 0
200 execve(\"/bin/y\", [\"y\"], 0x7ffd /* 3 vars */) = 0
200 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000300000
--- SIGCHLD {si_signo=SIGCHLD} ---
200 +++ exited with 0 +++
300 +++ exited with 0 +++
100 exit_group(0)                     = ?
100 +++ exited with 0 +++
garbage line without a call
";
    let imported = import(log);
    let s = &imported.stats;
    assert_eq!(
        (s.failed, s.unmapped_munmaps, s.ignored, s.unreadable),
        (1, 1, 2, 1),
        "{s}"
    );
    let p = |start, len, prot| Op::Mmap { start, len, prot };
    let expected = vec![
        op(0, p(0x7f0000000000, 0x2000, RW)),
        op(0, p(0x7f0000001000, 0x1000, Prot(Prot::READ))),
        op(
            0,
            Op::Brk {
                start: 0x555000,
                old_end: 0x555000,
                new_end: 0x576000,
            },
        ),
        op(
            0,
            Op::Mprotect {
                start: 0x7f0000000000,
                len: 0x1000,
                prot: Prot(Prot::READ),
            },
        ),
        op(
            0,
            Op::Munmap {
                start: 0x7f0000000000,
                len: 0x1000,
            },
        ),
        op(0, p(0x7f0000100000, 0x2000, Prot(Prot::READ))),
        TraceRecord {
            space: 0,
            event: TraceEvent::Fork { child: 1 },
        },
        op(0, p(0x7f0000200000, 0x1000, Prot(Prot::READ))),
        op(
            1,
            Op::Munmap {
                start: 0x7f0000001000,
                len: 0x1000,
            },
        ),
        TraceRecord {
            space: 1,
            event: TraceEvent::Exit,
        },
        op(2, p(0x7f0000300000, 0x1000, Prot(Prot::READ))),
        TraceRecord {
            space: 2,
            event: TraceEvent::Exit,
        },
        TraceRecord {
            space: 0,
            event: TraceEvent::Exit,
        },
    ];
    // Pid 101's only call was ignored: it never needed a space. The thread (300) maps into
    // its creator's space 0; the forked child (200) has space 1 until its execve gives it 2.
    assert_eq!(
        imported.trace.records, expected,
        "{:#?}",
        imported.trace.records
    );
    let alloc = cache();
    run::replay(
        &alloc,
        &imported.trace,
        WriteConfig::default(),
        true,
        &mut run::NoRecorder,
    )
    .unwrap();
}

#[test]
fn a_child_seen_before_its_clone_returns_is_moved_to_the_right_space() {
    let log = "\
1 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x10000
1 clone3({flags=CLONE_VM|CLONE_THREAD} <unfinished ...>
2 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x20000
1 <... clone3 resumed> => {parent_tid=[2]}, 88) = 2
2 munmap(0x10000, 4096) = 0
";
    let imported = import(log);
    let records = &imported.trace.records;
    assert_eq!(
        records[1].space, 1,
        "provisional space of pid 2: {records:?}"
    );
    assert_eq!(
        records[2],
        TraceRecord {
            space: 1,
            event: TraceEvent::Exit
        }
    );
    assert_eq!(
        records[3],
        op(
            0,
            Op::Munmap {
                start: 0x10000,
                len: 0x1000
            }
        )
    );
    assert_eq!(imported.stats.unreadable, 0);
}

#[test]
fn a_vfork_child_that_execs_before_vfork_returns_keeps_its_new_space() {
    let log = "\
7 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x10000
7 vfork( <unfinished ...>
8 execve(\"/bin/as\", [\"as\"], 0x7ffd /* 3 vars */) = 0
8 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x20000
7 <... vfork resumed>)              = 8
8 munmap(0x20000, 4096) = 0
7 munmap(0x10000, 4096) = 0
8 +++ exited with 0 +++
";
    let imported = import(log);
    assert_eq!(
        imported.trace.records,
        vec![
            op(
                0,
                Op::Mmap {
                    start: 0x10000,
                    len: 0x1000,
                    prot: Prot(Prot::READ)
                }
            ),
            op(
                1,
                Op::Mmap {
                    start: 0x20000,
                    len: 0x1000,
                    prot: Prot(Prot::READ)
                }
            ),
            op(
                1,
                Op::Munmap {
                    start: 0x20000,
                    len: 0x1000
                }
            ),
            op(
                0,
                Op::Munmap {
                    start: 0x10000,
                    len: 0x1000
                }
            ),
            TraceRecord {
                space: 1,
                event: TraceEvent::Exit
            },
        ]
    );
    replay_checked(&imported.trace);
}

#[test]
fn the_stats_tell_whether_tasks_could_be_grouped_into_processes() {
    let mmap = "mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x10000";
    // Two tasks, memory calls only: no way to tell threads from processes.
    let memory_only = import(&format!("10 {mmap}\n11 {mmap}\n"));
    assert_eq!(memory_only.stats.tasks, 2);
    assert_eq!(memory_only.stats.process_events(), 0);
    assert!(memory_only.stats.tasks_ungrouped());
    // The same with the clone that made task 11 a thread of 10.
    let with_clone = import(&format!(
        "10 {mmap}\n10 clone(child_stack=0x1, flags=CLONE_VM|CLONE_THREAD) = 11\n11 {mmap}\n"
    ));
    assert_eq!(with_clone.stats.tasks, 2);
    assert_eq!(with_clone.stats.process_events(), 1);
    assert!(!with_clone.stats.tasks_ungrouped());
    // One task without process events is fine.
    let single = import(&format!("{mmap}\n"));
    assert_eq!(single.stats.tasks, 1);
    assert!(!single.stats.tasks_ungrouped());
    // Nothing readable: no tasks, no records.
    let garbage = import("hello world\n\u{1}\u{2}\n");
    assert_eq!((garbage.stats.tasks, garbage.stats.records), (0, 0));
    assert_eq!(garbage.stats.unreadable, 2);
}
