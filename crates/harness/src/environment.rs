//! The settings of the machine and process that change allocator figures, recorded with every
//! result: how the CPU number is found (rseq), glibc's tunables, the CPU frequency governor,
//! SMT, transparent huge pages, address-space randomisation, NUMA nodes and the cgroup's CPU
//! limit. (Steal time is measured per measurement, see [`crate::steal`].)
//!
//! Every value is read, never assumed: one that cannot be read (no such file on this kernel,
//! a container that hides it) is `None`, shown as `unknown`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The auxiliary-vector entry holding the kernel's rseq feature size (Linux 6.3 and later).
const AT_RSEQ_FEATURE_SIZE: u64 = 27;

/// What this process ran under. `None` everywhere means "could not be read".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// glibc's rseq registration: its `__rseq_size` (0: glibc registered no area, as under
    /// `glibc.pthread.rseq=0` or valgrind; from 20: an area per thread, which the per-CPU
    /// designs read their CPU from). `None`: the C library exports no `__rseq_size` (not
    /// glibc 2.35 or later), so no area is registered on the allocators' behalf.
    pub rseq_glibc_size: Option<u32>,
    /// The kernel's rseq feature size (`getauxval(AT_RSEQ_FEATURE_SIZE)`, from
    /// `/proc/self/auxv`); `None` where the kernel does not pass it (before Linux 6.3).
    pub rseq_kernel_feature_size: Option<u64>,
    /// `SHEAF_RSEQ` (`0` turns `sheaf`'s rseq critical sections off); `None`: unset.
    pub sheaf_rseq: Option<String>,
    /// `GLIBC_TUNABLES` (malloc and rseq tunables change the `system` allocator and the
    /// rseq area); `None`: unset.
    pub glibc_tunables: Option<String>,
    /// The CPU frequency governor of each CPU this process may use, distinct values joined
    /// by `,` (`scaling_governor`); `None`: no cpufreq (common in VMs).
    pub cpu_governor: Option<String>,
    /// SMT control (`/sys/devices/system/cpu/smt/control`: `on`, `off`, `forceoff`,
    /// `notsupported`, `notimplemented`).
    pub smt_control: Option<String>,
    /// Whether SMT siblings are active (`/sys/devices/system/cpu/smt/active`).
    pub smt_active: Option<bool>,
    /// Transparent huge pages mode (`/sys/kernel/mm/transparent_hugepage/enabled`, the
    /// bracketed choice: `always`, `madvise` or `never`).
    pub thp: Option<String>,
    /// Address-space layout randomisation (`/proc/sys/kernel/randomize_va_space`: 0 off,
    /// 1 stack and mmap, 2 also the heap).
    pub aslr: Option<u8>,
    /// NUMA nodes online (`/sys/devices/system/node/online`).
    pub numa_nodes: Option<usize>,
    /// The tightest CPU bandwidth limit on this process's cgroup (v2 `cpu.max`, or v1's
    /// CFS quota and period, the cgroup's own or an ancestor's, as `QUOTA PERIOD`
    /// microseconds, or `max` when none limits it), with the cgroup that sets it.
    pub cgroup_cpu_max: Option<String>,
}

impl Environment {
    /// Reads this process's environment.
    pub fn detect() -> Self {
        let mut env = Self::read_from(Path::new("/"));
        env.rseq_glibc_size = glibc_rseq_size();
        env.sheaf_rseq = std::env::var("SHEAF_RSEQ").ok();
        env.glibc_tunables = std::env::var("GLIBC_TUNABLES").ok();
        env
    }

    /// The facts found in the files under `root` (`/` for this machine): everything but
    /// the process's own symbols and variables.
    pub fn read_from(root: &Path) -> Self {
        let read = |path: &str| std::fs::read_to_string(root.join(path)).ok();
        let read_trimmed = |path: &str| read(path).map(|s| s.trim().to_owned());
        let mut governors: Vec<String> = Vec::new();
        let mut any_governor_missing = false;
        for cpu in crate::cpus::allowed_cpus() {
            match read_trimmed(&format!(
                "sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
            )) {
                Some(governor) => {
                    if !governors.contains(&governor) {
                        governors.push(governor);
                    }
                }
                None => any_governor_missing = true,
            }
        }
        if any_governor_missing && !governors.is_empty() {
            governors.push("unknown".to_owned());
        }
        Self {
            rseq_glibc_size: None,
            rseq_kernel_feature_size: std::fs::read(root.join("proc/self/auxv"))
                .ok()
                .and_then(|auxv| auxv_value(&auxv, AT_RSEQ_FEATURE_SIZE)),
            sheaf_rseq: None,
            glibc_tunables: None,
            cpu_governor: (!governors.is_empty()).then(|| governors.join(",")),
            smt_control: read_trimmed("sys/devices/system/cpu/smt/control"),
            smt_active: read_trimmed("sys/devices/system/cpu/smt/active").and_then(|s| {
                match s.as_str() {
                    "0" => Some(false),
                    "1" => Some(true),
                    _ => None,
                }
            }),
            thp: read("sys/kernel/mm/transparent_hugepage/enabled")
                .and_then(|s| bracketed_choice(&s)),
            aslr: read_trimmed("proc/sys/kernel/randomize_va_space").and_then(|s| s.parse().ok()),
            numa_nodes: read("sys/devices/system/node/online")
                .and_then(|s| crate::cpus::parse_cpu_list(&s))
                .map(|nodes| nodes.len()),
            cgroup_cpu_max: read("proc/self/cgroup")
                .and_then(|groups| cgroup_cpu_limit(&root.join("sys/fs/cgroup"), &groups)),
        }
    }

    /// Label and value of every fact, `unknown` or `unset` where there is none, for output.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        fn or_unknown<T: ToString>(value: &Option<T>) -> String {
            value
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), T::to_string)
        }
        let rseq = match self.rseq_glibc_size {
            Some(0) => "not registered by glibc (__rseq_size 0)".to_owned(),
            Some(size) => format!("registered by glibc (__rseq_size {size})"),
            None => "no glibc registration (no __rseq_size: glibc before 2.35)".to_owned(),
        };
        let unset = |value: &Option<String>| value.clone().unwrap_or_else(|| "unset".to_owned());
        vec![
            ("rseq", rseq),
            (
                "rseq kernel feature size",
                or_unknown(&self.rseq_kernel_feature_size),
            ),
            ("SHEAF_RSEQ", unset(&self.sheaf_rseq)),
            ("GLIBC_TUNABLES", unset(&self.glibc_tunables)),
            ("CPU governor", or_unknown(&self.cpu_governor)),
            ("SMT control", or_unknown(&self.smt_control)),
            (
                "SMT active",
                or_unknown(&self.smt_active.map(|on| if on { "yes" } else { "no" })),
            ),
            ("THP", or_unknown(&self.thp)),
            ("ASLR (randomize_va_space)", or_unknown(&self.aslr)),
            ("NUMA nodes", or_unknown(&self.numa_nodes)),
            ("cgroup cpu.max", or_unknown(&self.cgroup_cpu_max)),
        ]
    }
}

/// glibc's `__rseq_size`, looked up with `dlsym` so that a C library without it still links.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_rseq_size() -> Option<u32> {
    use std::ffi::{c_char, c_void};
    unsafe extern "C" {
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    }
    // SAFETY: `dlsym` with RTLD_DEFAULT (null) and a NUL-terminated name only looks it up.
    let size = unsafe { dlsym(std::ptr::null_mut(), c"__rseq_size".as_ptr()) };
    if size.is_null() {
        return None;
    }
    // SAFETY: glibc defines `__rseq_size` as an `unsigned int`, constant after start-up.
    Some(unsafe { *size.cast::<u32>() })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_rseq_size() -> Option<u32> {
    None
}

/// The value of entry `key` of an auxiliary vector (`/proc/self/auxv`: native-endian word
/// pairs, ending with `AT_NULL`).
pub fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |chunk: &[u8]| -> u64 {
        let mut bytes = [0u8; WORD];
        bytes.copy_from_slice(chunk);
        usize::from_ne_bytes(bytes) as u64
    };
    for pair in auxv.chunks_exact(2 * WORD) {
        let (k, v) = (word(&pair[..WORD]), word(&pair[WORD..]));
        if k == 0 {
            return None;
        }
        if k == key {
            return Some(v);
        }
    }
    None
}

/// The bracketed word of a sysfs choice list such as `always [madvise] never`.
pub fn bracketed_choice(list: &str) -> Option<String> {
    let start = list.find('[')? + 1;
    let end = start + list[start..].find(']')?;
    Some(list[start..end].to_owned())
}

/// The tightest CPU limit of this process's cgroup: v2 `cpu.max` where the cgroup's
/// unified hierarchy has the cpu controller, else v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`
/// of the `cpu` hierarchy, in `cpu.max`'s form.
fn cgroup_cpu_limit(cgroup_root: &Path, proc_self_cgroup: &str) -> Option<String> {
    cgroup_cpu_max(cgroup_root, proc_self_cgroup)
        .or_else(|| cgroup_v1_cpu_quota(cgroup_root, proc_self_cgroup))
}

/// The tightest v1 CFS quota on the `cpu` hierarchy's path named in `proc_self_cgroup` and
/// its ancestors, as `QUOTA PERIOD` (or `max`) like v2's `cpu.max`.
pub fn cgroup_v1_cpu_quota(cgroup_root: &Path, proc_self_cgroup: &str) -> Option<String> {
    let (controllers, path) = proc_self_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "cpu")
            .then(|| (controllers.to_owned(), path.trim().to_owned()))
    })?;
    let mount = [controllers.as_str(), "cpu", "cpu,cpuacct", "cpuacct,cpu"]
        .into_iter()
        .map(|dir| cgroup_root.join(dir))
        .find(|dir| dir.join("cpu.cfs_quota_us").exists())?;
    let mut tightest: Option<(f64, String)> = None;
    let mut read_any = false;
    let mut group = Path::new(path.trim_start_matches('/')).to_path_buf();
    loop {
        let read = |file: &str| {
            std::fs::read_to_string(mount.join(&group).join(file))
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
        };
        if let (Some(quota), Some(period)) = (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us")) {
            read_any = true;
            if quota > 0 && period > 0 {
                let cpus = quota as f64 / period as f64;
                if tightest.as_ref().is_none_or(|(best, _)| cpus < *best) {
                    let name = format!("/{}", group.display());
                    tightest = Some((cpus, format!("{quota} {period} (v1, set by {name})")));
                }
            }
        }
        if !group.pop() {
            break;
        }
    }
    match tightest {
        Some((_, limit)) => Some(limit),
        None => read_any.then(|| "max".to_owned()),
    }
}

/// The tightest `cpu.max` on the cgroup-v2 path named in `proc_self_cgroup` (the `0::/path`
/// line) and its ancestors under `cgroup_root`: the limit with the smallest quota/period,
/// with the cgroup that sets it, or `max` when every readable level is unlimited. `None`
/// without a v2 line or when no level's `cpu.max` can be read.
pub fn cgroup_cpu_max(cgroup_root: &Path, proc_self_cgroup: &str) -> Option<String> {
    let path = proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))?
        .trim();
    let mut tightest: Option<(f64, String)> = None;
    let mut read_any = false;
    let mut group = Path::new(path.trim_start_matches('/')).to_path_buf();
    loop {
        if let Ok(max) = std::fs::read_to_string(cgroup_root.join(&group).join("cpu.max")) {
            read_any = true;
            let mut fields = max.split_whitespace();
            if let (Some(quota), Some(period)) = (fields.next(), fields.next())
                && let (Ok(quota), Ok(period)) = (quota.parse::<f64>(), period.parse::<f64>())
                && period > 0.0
            {
                let cpus = quota / period;
                if tightest.as_ref().is_none_or(|(best, _)| cpus < *best) {
                    let name = format!("/{}", group.display());
                    tightest = Some((cpus, format!("{} (set by {name})", max.trim())));
                }
            }
        }
        if !group.pop() {
            break;
        }
    }
    match tightest {
        Some((_, limit)) => Some(limit),
        None => read_any.then(|| "max".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_readable_gives_unknown_everywhere() {
        let empty = tempfile::tempdir().unwrap();
        let env = Environment::read_from(empty.path());
        assert_eq!(env, Environment::default());
        for (label, value) in env.describe() {
            if label == "rseq" {
                assert!(value.starts_with("no glibc registration"), "{value}");
            } else {
                assert!(value == "unknown" || value == "unset", "{label}: {value}");
            }
        }
    }

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_fake_machine_is_read_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "sys/devices/system/cpu/smt/control", "on\n");
        write(root, "sys/devices/system/cpu/smt/active", "1\n");
        write(
            root,
            "sys/kernel/mm/transparent_hugepage/enabled",
            "always [madvise] never\n",
        );
        write(root, "proc/sys/kernel/randomize_va_space", "2\n");
        write(root, "sys/devices/system/node/online", "0-1\n");
        write(root, "proc/self/cgroup", "0::/user.slice/bench.scope\n");
        write(root, "sys/fs/cgroup/cpu.max", "max 100000\n");
        write(root, "sys/fs/cgroup/user.slice/cpu.max", "200000 100000\n");
        write(
            root,
            "sys/fs/cgroup/user.slice/bench.scope/cpu.max",
            "150000 100000\n",
        );
        for cpu in crate::cpus::allowed_cpus() {
            write(
                root,
                &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
                "performance\n",
            );
        }
        let mut auxv = Vec::new();
        for word in [6usize, 4096, 27, 32, 28, 32, 0, 0] {
            auxv.extend_from_slice(&word.to_ne_bytes());
        }
        write(root, "proc/self/auxv", "");
        std::fs::write(root.join("proc/self/auxv"), &auxv).unwrap();

        let env = Environment::read_from(root);
        assert_eq!(env.smt_control.as_deref(), Some("on"));
        assert_eq!(env.smt_active, Some(true));
        assert_eq!(env.thp.as_deref(), Some("madvise"));
        assert_eq!(env.aslr, Some(2));
        assert_eq!(env.numa_nodes, Some(2));
        assert_eq!(
            env.cgroup_cpu_max.as_deref(),
            Some("150000 100000 (set by /user.slice/bench.scope)")
        );
        assert_eq!(env.cpu_governor.as_deref(), Some("performance"));
        assert_eq!(env.rseq_kernel_feature_size, Some(32));
    }

    #[test]
    fn parsers_take_what_is_there_and_nothing_else() {
        assert_eq!(
            bracketed_choice("[always] madvise never"),
            Some("always".into())
        );
        assert_eq!(bracketed_choice("always madvise never"), None);
        let mut auxv = Vec::new();
        for word in [6usize, 4096, 0, 0, 27, 99] {
            auxv.extend_from_slice(&word.to_ne_bytes());
        }
        // Entries after AT_NULL are not the vector's.
        assert_eq!(auxv_value(&auxv, 6), Some(4096));
        assert_eq!(auxv_value(&auxv, 27), None);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cgroup_cpu_max(dir.path(), "0::/\n"), None);
        write(dir.path(), "cpu.max", "max 100000\n");
        assert_eq!(cgroup_cpu_max(dir.path(), "0::/\n").as_deref(), Some("max"));
        // cgroup v1 only: no unified line.
        assert_eq!(cgroup_cpu_max(dir.path(), "4:cpu,cpuacct:/\n"), None);
        let v1 = tempfile::tempdir().unwrap();
        write(v1.path(), "cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
        write(v1.path(), "cpu,cpuacct/cpu.cfs_period_us", "100000\n");
        write(v1.path(), "cpu,cpuacct/box/cpu.cfs_quota_us", "50000\n");
        write(v1.path(), "cpu,cpuacct/box/cpu.cfs_period_us", "100000\n");
        let groups = "4:cpu,cpuacct:/box\n0::/\n";
        assert_eq!(
            cgroup_cpu_limit(v1.path(), groups).as_deref(),
            Some("50000 100000 (v1, set by /box)")
        );
        assert_eq!(
            cgroup_cpu_limit(v1.path(), "4:cpu,cpuacct:/\n").as_deref(),
            Some("max")
        );
    }

    #[test]
    fn this_process_is_described() {
        let env = Environment::detect();
        // The aslr file exists on every Linux since 2.6.12, and /proc/self/auxv is readable
        // by the process itself.
        assert!(env.aslr.is_some(), "{env:?}");
        assert_eq!(
            env.glibc_tunables,
            std::env::var("GLIBC_TUNABLES").ok(),
            "recorded as set"
        );
    }
}
