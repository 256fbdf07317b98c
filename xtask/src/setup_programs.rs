//! `cargo xtask setup-programs`: installs what `sheafbench programs` needs on a Debian-like
//! machine: the packages the programs manifest names under `requires`, and the allocator
//! libraries that the `mimalloc`, `jemalloc` and `tcmalloc` choices preload.
//!
//! Packages already installed (by `dpkg-query`) are skipped and listed, so a second run
//! does nothing. The rest are installed with `apt-get install -y --no-install-recommends`
//! (after `apt-get update` if the first try fails, as on a machine whose package lists were
//! never fetched). Without root, or without `apt-get`, the task prints the one command to
//! run and exits with status 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Parser;

use crate::util::{self, TaskError, TaskResult};

/// The Debian packages of the allocator libraries, in the order of the `--alloc` names
/// mimalloc, jemalloc, tcmalloc.
pub(crate) const ALLOCATOR_PACKAGES: [&str; 3] =
    ["libmimalloc2.0", "libjemalloc2", "libtcmalloc-minimal4"];

/// Installs the packaged programs and allocator libraries.
#[derive(Debug, Parser)]
pub(crate) struct Options {
    /// The programs manifest whose `requires` lists the packages.
    #[arg(long, value_name = "PATH", default_value = "programs/programs.yaml")]
    manifest: PathBuf,
}

pub(crate) fn setup_programs(options: Options) -> TaskResult {
    let manifest = if options.manifest.is_absolute() {
        options.manifest
    } else {
        util::root().join(options.manifest)
    };
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let mut wanted =
        required_packages(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    for package in ALLOCATOR_PACKAGES {
        if !wanted.iter().any(|p| p == package) {
            wanted.push(package.to_owned());
        }
    }
    let (installed, missing): (Vec<String>, Vec<String>) = wanted
        .into_iter()
        .partition(|package| is_installed(package));
    if !installed.is_empty() {
        println!("already installed: {}", installed.join(" "));
    }
    if missing.is_empty() {
        println!("nothing to install");
        return Ok(());
    }
    let line = install_line(&missing);
    let apt_get = find_on_path("apt-get");
    if apt_get.is_none() || !is_root() {
        println!("{line}");
        let why = if apt_get.is_none() {
            "apt-get is not on PATH"
        } else {
            "installing needs root"
        };
        return Err(TaskError::Failed(format!(
            "{why}: install {} with the command above (or your system's equivalent)",
            missing.join(" ")
        )));
    }
    let apt_get = apt_get.expect("checked above");
    if util::run(install(&apt_get, &missing)).is_err() {
        eprintln!("xtask: fetching the package lists and trying once more");
        util::run(apt(&apt_get, &["update"]))?;
        util::run(install(&apt_get, &missing))?;
    }
    let still: Vec<&String> = missing.iter().filter(|p| !is_installed(p)).collect();
    if !still.is_empty() {
        return Err(TaskError::Failed(format!(
            "apt-get succeeded but these are still not installed: {still:?}"
        )));
    }
    println!("installed: {}", missing.join(" "));
    Ok(())
}

/// The packages named by `requires` entries of the manifest's programs, in order of first
/// mention, each once. Only the fields this task needs are read; `sheafbench programs`
/// checks the rest.
pub(crate) fn required_packages(manifest: &str) -> Result<Vec<String>, String> {
    let document: yaml_serde::Value =
        yaml_serde::from_str(manifest).map_err(|e| format!("not valid YAML: {e}"))?;
    let programs = document
        .get("programs")
        .and_then(yaml_serde::Value::as_sequence)
        .ok_or("no `programs` list")?;
    let mut packages = Vec::new();
    for program in programs {
        let name = program
            .get("name")
            .and_then(yaml_serde::Value::as_str)
            .unwrap_or("(unnamed)");
        let Some(requires) = program.get("requires") else {
            continue;
        };
        let requires = requires
            .as_sequence()
            .ok_or_else(|| format!("program {name}: `requires` is not a list"))?;
        for entry in requires {
            let package = entry
                .get("package")
                .and_then(yaml_serde::Value::as_str)
                .ok_or_else(|| format!("program {name}: a `requires` entry has no `package`"))?;
            if !packages.iter().any(|p| p == package) {
                packages.push(package.to_owned());
            }
        }
    }
    Ok(packages)
}

/// The one-line command that installs `packages`.
pub(crate) fn install_line(packages: &[String]) -> String {
    format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

fn apt(apt_get: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(apt_get);
    command
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    command
}

fn install(apt_get: &Path, packages: &[String]) -> Command {
    let mut command = apt(apt_get, &["install", "-y", "--no-install-recommends"]);
    command.args(packages);
    command
}

/// Whether dpkg records `package` as installed (`ii`); false where dpkg-query is missing.
fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|output| output.status.success() && installed_status(&output.stdout))
}

/// dpkg's abbreviated status: desired state `i` and current state `i`.
fn installed_status(abbrev: &[u8]) -> bool {
    abbrev.starts_with(b"ii")
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_come_from_requires_once_each_in_order() {
        let manifest = r#"
programs:
  - name: a
    command: ["x"]
  - name: b
    requires:
      - { exe: z3, package: z3 }
      - { exe: python3, package: python3 }
  - name: c
    requires:
      - { exe: python3, package: python3 }
      - { exe: gs, package: ghostscript }
"#;
        assert_eq!(
            required_packages(manifest).unwrap(),
            ["z3", "python3", "ghostscript"]
        );
    }

    #[test]
    fn malformed_requires_are_refused_with_the_program_named() {
        let no_package = "programs:\n  - name: b\n    requires:\n      - { exe: z3 }\n";
        let error = required_packages(no_package).unwrap_err();
        assert!(
            error.contains("program b") && error.contains("package"),
            "{error}"
        );
        let not_list = "programs:\n  - name: c\n    requires: z3\n";
        assert!(
            required_packages(not_list)
                .unwrap_err()
                .contains("program c")
        );
        assert!(
            required_packages("other: 1\n")
                .unwrap_err()
                .contains("programs")
        );
    }

    #[test]
    fn the_repository_manifest_names_every_packaged_program() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../programs/programs.yaml"),
        )
        .unwrap();
        let packages = required_packages(&text).unwrap();
        for package in [
            "python3",
            "sqlite3",
            "z3",
            "ghostscript",
            "gcc",
            "redis-server",
            "redis-tools",
        ] {
            assert!(
                packages.iter().any(|p| p == package),
                "{package}: {packages:?}"
            );
        }
    }

    #[test]
    fn the_printed_command_installs_without_questions_or_extras() {
        let line = install_line(&["z3".to_owned(), "libjemalloc2".to_owned()]);
        assert_eq!(
            line,
            "apt-get install -y --no-install-recommends z3 libjemalloc2"
        );
    }

    #[test]
    fn only_fully_installed_packages_count() {
        assert!(installed_status(b"ii "));
        assert!(!installed_status(b"rc "));
        assert!(!installed_status(b"un "));
        assert!(!installed_status(b""));
    }

    #[test]
    fn options_parse() {
        let options: Options = crate::parse_task_args(&["--manifest", "m.yaml"]).unwrap();
        assert_eq!(options.manifest, PathBuf::from("m.yaml"));
    }
}
