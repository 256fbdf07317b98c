//! The allocators `sheafbench programs` preloads, and where their libraries are found.

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::result::PreloadedAllocator;

/// Every allocator name `--alloc` takes, in the default order.
pub(crate) const NAMES: [&str; 5] = ["glibc", "sheaf-malloc", "mimalloc", "jemalloc", "tcmalloc"];

/// The packaged allocators: name, library file in the multiarch directory, Debian package.
const PACKAGED: [(&str, &str, &str); 3] = [
    ("mimalloc", "libmimalloc.so.2", "libmimalloc2.0"),
    ("jemalloc", "libjemalloc.so.2", "libjemalloc2"),
    (
        "tcmalloc",
        "libtcmalloc_minimal.so.4",
        "libtcmalloc-minimal4",
    ),
];

/// An allocator ready to preload.
#[derive(Clone, Debug)]
pub(crate) struct Allocator {
    /// Its name.
    pub(crate) name: &'static str,
    /// The library for `LD_PRELOAD` (`None`: glibc's own malloc, nothing preloaded).
    pub(crate) library: Option<PathBuf>,
    /// The Debian package, for the packaged ones.
    pub(crate) package: Option<&'static str>,
    /// Its version, where known.
    pub(crate) version: Option<String>,
}

impl Allocator {
    /// Its entry in the result file.
    pub(crate) fn describe(&self) -> PreloadedAllocator {
        PreloadedAllocator {
            name: self.name.to_owned(),
            library: self.library.as_ref().map(|p| p.display().to_string()),
            package: self.package.map(str::to_owned),
            version: self.version.clone(),
        }
    }
}

/// The variable that names another directory for the packaged libraries.
pub(crate) const LIB_DIR_VARIABLE: &str = "SHEAFBENCH_LIB_DIR";

/// Where the packaged libraries are: `$SHEAFBENCH_LIB_DIR`, else the multiarch library
/// directory of this machine (`/usr/lib/x86_64-linux-gnu`).
pub(crate) fn lib_dir() -> PathBuf {
    match std::env::var_os(LIB_DIR_VARIABLE) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH)),
    }
}

/// Where `libsheaf_malloc.so` is looked for without `--sheaf-malloc`: beside the running
/// binary (`target/<profile>/`, where `cargo build` leaves it) and in its `deps/` (where
/// `cargo test` builds it); the newer of the two is taken.
pub(crate) fn sheaf_malloc_candidates() -> Vec<PathBuf> {
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    else {
        return Vec::new();
    };
    vec![
        dir.join("libsheaf_malloc.so"),
        dir.join("deps").join("libsheaf_malloc.so"),
    ]
}

/// The installed version of Debian package `package`, from `dpkg-query`.
fn package_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!version.is_empty()).then_some(version)
}

/// Finds allocator `name` (one of [`NAMES`]): `Err` with a one-line reason and what to
/// install when its library is missing. `sheaf_malloc` is `--sheaf-malloc`; `lib_dir` the
/// directory of the packaged libraries.
pub(crate) fn find(
    name: &'static str,
    sheaf_malloc: Option<&Path>,
    lib_dir: &Path,
) -> Result<Allocator, String> {
    match name {
        "glibc" => Ok(Allocator {
            name,
            library: None,
            package: None,
            version: None,
        }),
        "sheaf-malloc" => {
            let found = match sheaf_malloc {
                Some(path) => path.exists().then(|| path.to_path_buf()).ok_or_else(|| {
                    format!(
                        "sheaf-malloc: --sheaf-malloc {} does not exist (build it with `cargo build --release -p sheaf-malloc`)",
                        path.display()
                    )
                })?,
                // The newer copy: `cargo test` refreshes the one in `deps/` only.
                None => sheaf_malloc_candidates()
                    .into_iter()
                    .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
                    .max_by_key(|(modified, _)| *modified)
                    .map(|(_, p)| p)
                    .ok_or_else(|| {
                        "sheaf-malloc: libsheaf_malloc.so is not built beside sheafbench (build it with `cargo build --release -p sheaf-malloc`, or give --sheaf-malloc PATH)".to_owned()
                    })?,
            };
            Ok(Allocator {
                name,
                library: Some(std::fs::canonicalize(&found).unwrap_or(found)),
                package: None,
                version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            })
        }
        _ => {
            let &(_, file, package) = PACKAGED
                .iter()
                .find(|(n, _, _)| *n == name)
                .expect("a known allocator name");
            let library = lib_dir.join(file);
            if !library.exists() {
                return Err(format!(
                    "{name}: not installed ({} missing; apt-get install {package}, or cargo xtask setup-programs)",
                    library.display()
                ));
            }
            Ok(Allocator {
                name,
                library: Some(library),
                package: Some(package),
                version: package_version(package),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_packaged_library_names_its_package() {
        let empty = tempfile::tempdir().unwrap();
        let err = find("jemalloc", None, empty.path()).unwrap_err();
        assert!(
            err.starts_with("jemalloc: not installed (")
                && err.ends_with("apt-get install libjemalloc2, or cargo xtask setup-programs)"),
            "{err}"
        );
        std::fs::write(empty.path().join("libjemalloc.so.2"), b"").unwrap();
        let found = find("jemalloc", None, empty.path()).unwrap();
        assert_eq!(
            found.library.unwrap(),
            empty.path().join("libjemalloc.so.2")
        );
        assert_eq!(found.package, Some("libjemalloc2"));
        assert!(find("glibc", None, empty.path()).unwrap().library.is_none());
        let err = find(
            "sheaf-malloc",
            Some(&empty.path().join("no.so")),
            empty.path(),
        )
        .unwrap_err();
        assert!(
            err.contains("cargo build --release -p sheaf-malloc"),
            "{err}"
        );
    }
}
