//! The programs manifest (`programs/programs.yaml`): which real programs `sheafbench programs`
//! runs, how to build and set them up, and how to check their output. Everything here is
//! validated before anything runs; every error names the file, the program and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The placeholders a manifest string may hold.
pub(crate) const PLACEHOLDERS: [&str; 5] = ["bin", "programs", "input", "work", "port"];

/// A manifest file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    programs: Vec<ProgramSpec>,
}

/// Which suite a program belongs to (`--suite` filters on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Suite {
    /// The allocator stress patterns, small C programs built by sheafbench.
    Stress,
    /// Real programs from the distribution's packages.
    Packaged,
}

impl Suite {
    /// Its name in the manifest and on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Suite::Stress => "stress",
            Suite::Packaged => "packaged",
        }
    }

    /// Parses `--suite`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "stress" => Some(Suite::Stress),
            "packaged" => Some(Suite::Packaged),
            _ => None,
        }
    }
}

/// How a run's output is checked against the reference allocator's run of the same round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Check {
    /// The whole stdout, byte for byte.
    #[default]
    Stdout,
    /// The first line of stdout.
    FirstLine,
    /// Only the exit status (0); the output varies by design.
    Status,
}

/// An executable a program needs on `PATH`, and the package that provides it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Requirement {
    /// The executable's name.
    pub(crate) exe: String,
    /// The Debian package to install for it.
    pub(crate) package: String,
}

/// A client/server program: the server runs preloaded, the client is timed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Server {
    /// The server's argv (preloaded).
    pub(crate) command: Vec<String>,
    /// The argv that stops the server (not preloaded); the server must then exit 0.
    pub(crate) stop: Vec<String>,
}

/// One program of the manifest, as written (placeholders not yet expanded).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProgramSpec {
    /// Unique name, `[a-z0-9-]+`.
    pub(crate) name: String,
    /// Its suite.
    pub(crate) suite: Suite,
    /// What it exercises, one line.
    #[serde(default)]
    pub(crate) about: String,
    /// A C file (relative to the manifest) compiled once into `{bin}/<name>`.
    #[serde(default)]
    pub(crate) build: Option<String>,
    /// An argv run once before the rounds, without preload, to write inputs into `{input}`.
    #[serde(default)]
    pub(crate) setup: Option<Vec<String>>,
    /// The measured argv.
    pub(crate) command: Vec<String>,
    /// A file fed to the command's stdin (default: `/dev/null`).
    #[serde(default)]
    pub(crate) stdin: Option<String>,
    /// How its output is checked.
    #[serde(default)]
    pub(crate) check: Check,
    /// A file (relative to `{work}`) that must equal the reference run's.
    #[serde(default)]
    pub(crate) check_file: Option<String>,
    /// Executables it needs.
    #[serde(default)]
    pub(crate) requires: Vec<Requirement>,
    /// The server of a client/server program.
    #[serde(default)]
    pub(crate) server: Option<Server>,
}

/// A manifest read and validated.
#[derive(Clone, Debug)]
pub(crate) struct Manifest {
    /// The file.
    pub(crate) file: PathBuf,
    /// Its directory (`{programs}`; relative paths of the manifest start there).
    pub(crate) dir: PathBuf,
    /// Its programs, in file order.
    pub(crate) programs: Vec<ProgramSpec>,
}

/// Where a manifest error is: `<file>: program `<name>`: <what>`.
fn located(file: &Path, program: Option<&str>, what: &str) -> String {
    match program {
        Some(name) => format!("{}: program `{name}`: {what}", file.display()),
        None => format!("{}: {what}", file.display()),
    }
}

impl Manifest {
    /// Reads and validates `file`.
    pub(crate) fn load(file: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            located(
                file,
                None,
                &format!("cannot read the programs manifest: {e}"),
            )
        })?;
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        Self::parse(file, dir, &text)
    }

    /// Validates the manifest `text` of `file`, whose directory is `dir`.
    pub(crate) fn parse(file: &Path, dir: PathBuf, text: &str) -> Result<Self, String> {
        let parsed: File = yaml_serde::from_str(text).map_err(|e| parse_error(file, text, &e))?;
        let mut seen = BTreeMap::new();
        for (index, p) in parsed.programs.iter().enumerate() {
            let at = |what: &str| located(file, Some(&p.name), what);
            if p.name.is_empty()
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(located(
                    file,
                    None,
                    &format!(
                        "programs[{index}].name: `{}` is not a valid name: expected lowercase letters, digits and `-`",
                        p.name
                    ),
                ));
            }
            if let Some(first) = seen.insert(p.name.clone(), index) {
                return Err(at(&format!(
                    "name: given twice (programs[{first}] and programs[{index}]); names must be unique"
                )));
            }
            if p.command.is_empty() {
                return Err(at("command: empty; expected the program's argv"));
            }
            if let Some(setup) = &p.setup
                && setup.is_empty()
            {
                return Err(at("setup: empty; expected an argv, or leave `setup` out"));
            }
            if let Some(server) = &p.server {
                if server.command.is_empty() {
                    return Err(at("server.command: empty; expected the server's argv"));
                }
                if server.stop.is_empty() {
                    return Err(at(
                        "server.stop: empty; expected the argv that stops the server",
                    ));
                }
            }
            for r in &p.requires {
                if r.exe.is_empty() || r.exe.contains('/') {
                    return Err(at(&format!(
                        "requires: exe `{}`: expected the name of an executable on PATH",
                        r.exe
                    )));
                }
            }
            for (field, value) in strings(p) {
                check_placeholders(&value).map_err(|e| at(&format!("{field}: {e}")))?;
            }
        }
        Ok(Self {
            file: file.to_path_buf(),
            dir,
            programs: parsed.programs,
        })
    }
}

/// Every string of a program that placeholders may appear in, with its field.
fn strings(p: &ProgramSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut list = |field: &str, values: &[String]| {
        for (i, v) in values.iter().enumerate() {
            out.push((format!("{field}[{i}]"), v.clone()));
        }
    };
    list("command", &p.command);
    if let Some(setup) = &p.setup {
        list("setup", setup);
    }
    if let Some(server) = &p.server {
        list("server.command", &server.command);
        list("server.stop", &server.stop);
    }
    for (field, value) in [
        ("build", &p.build),
        ("stdin", &p.stdin),
        ("check_file", &p.check_file),
    ] {
        if let Some(v) = value {
            out.push((field.to_owned(), v.clone()));
        }
    }
    out
}

/// A yaml error as `<file>: program `<name>`: <field path>: <what>`: the program named by
/// the index in the error's path, where the text gives it a name.
fn parse_error(file: &Path, text: &str, error: &yaml_serde::Error) -> String {
    let message = error.to_string();
    let Some(rest) = message.strip_prefix("programs[") else {
        return located(file, None, &format!("not a programs manifest: {message}"));
    };
    let Some((index, tail)) = rest.split_once(']') else {
        return located(file, None, &message);
    };
    let name = index.parse::<usize>().ok().and_then(|i| {
        let doc: yaml_serde::Value = yaml_serde::from_str(text).ok()?;
        doc.get("programs")?
            .get(i)?
            .get("name")?
            .as_str()
            .map(str::to_owned)
    });
    let tail = tail.trim_start_matches('.');
    let tail = tail.trim_start_matches(": ");
    match name {
        Some(name) => located(file, Some(&name), tail),
        None => located(file, None, &format!("programs[{index}]: {tail}")),
    }
}

/// Checks that every `{name}` in `text` is a known placeholder (`{{` and `}}` stand for
/// literal braces).
pub(crate) fn check_placeholders(text: &str) -> Result<(), String> {
    expand(text, &|name| {
        PLACEHOLDERS.contains(&name).then(|| format!("{{{name}}}"))
    })
    .map(drop)
}

/// `text` with each `{name}` replaced by `value(name)`, `{{` and `}}` by single braces; an
/// error names a placeholder `value` does not know or an unclosed brace.
pub(crate) fn expand(text: &str, value: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(format!(
                "a lone `}}` in `{text}`; write `}}}}` for a literal brace"
            ));
        }
        let Some(end) = tail.find('}') else {
            return Err(format!(
                "an unclosed `{{` in `{text}`; write `{{{{` for a literal brace"
            ));
        };
        let name = &tail[1..end];
        match value(name) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "unknown placeholder `{{{name}}}` (known: {})",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                ));
            }
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The values of the placeholders for one run; `None` leaves a placeholder as it is written.
#[derive(Clone, Debug, Default)]
pub(crate) struct Values {
    /// `{bin}`.
    pub(crate) bin: Option<String>,
    /// `{programs}`.
    pub(crate) programs: Option<String>,
    /// `{input}`.
    pub(crate) input: Option<String>,
    /// `{work}`.
    pub(crate) work: Option<String>,
    /// `{port}`.
    pub(crate) port: Option<u16>,
}

impl Values {
    /// `text` with the placeholders that have values expanded (the others kept).
    pub(crate) fn apply(&self, text: &str) -> String {
        let value = |name: &str| {
            let v = match name {
                "bin" => self.bin.clone(),
                "programs" => self.programs.clone(),
                "input" => self.input.clone(),
                "work" => self.work.clone(),
                "port" => self.port.map(|p| p.to_string()),
                _ => None,
            };
            Some(v.unwrap_or_else(|| format!("{{{name}}}")))
        };
        // The manifest was validated: no unknown placeholder is left.
        expand(text, &value).unwrap_or_else(|_| text.to_owned())
    }

    /// Each string of `argv` expanded.
    pub(crate) fn argv(&self, argv: &[String]) -> Vec<String> {
        argv.iter().map(|a| self.apply(a)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, String> {
        Manifest::parse(Path::new("m.yaml"), PathBuf::from("/m"), text)
    }

    const GOOD: &str = r#"
programs:
  - name: churn
    suite: stress
    about: "frees what others allocated"
    build: stress/churn.c
    command: ["{bin}/churn", "4"]
  - name: db
    suite: packaged
    setup: ["python3", "{programs}/gen.py", "{input}"]
    command: ["sqlite3", "{work}/x.db"]
    stdin: "{input}/load.sql"
    check: first-line
    check_file: out.txt
    requires:
      - { exe: sqlite3, package: sqlite3 }
  - name: kv
    suite: packaged
    command: ["client", "-p", "{port}"]
    check: status
    server:
      command: ["server", "--port", "{port}"]
      stop: ["client", "-p", "{port}", "shutdown"]
"#;

    #[test]
    fn a_manifest_reads_with_every_field() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.programs.len(), 3);
        let [churn, db, kv] = &m.programs[..] else {
            unreachable!()
        };
        assert_eq!(churn.suite, Suite::Stress);
        assert_eq!(churn.check, Check::Stdout);
        assert_eq!(churn.build.as_deref(), Some("stress/churn.c"));
        assert_eq!(db.check, Check::FirstLine);
        assert_eq!(db.requires[0].package, "sqlite3");
        assert_eq!(db.check_file.as_deref(), Some("out.txt"));
        assert_eq!(kv.check, Check::Status);
        assert_eq!(kv.server.as_ref().unwrap().stop.len(), 4);
    }

    #[test]
    fn errors_name_the_file_the_program_and_the_field() {
        let err =
            parse("programs:\n  - name: a\n    suite: stress\n    command: [x]\n    colour: red\n")
                .unwrap_err();
        assert!(
            err.starts_with("m.yaml: program `a`: unknown field `colour`"),
            "{err}"
        );
        let err = parse("programs:\n  - name: a\n    suite: stress\n").unwrap_err();
        assert!(
            err.starts_with("m.yaml: program `a`: missing field `command`"),
            "{err}"
        );
        let err = parse("programs:\n  - name: a\n    suite: stress\n    command: x\n").unwrap_err();
        assert!(
            err.starts_with(
                "m.yaml: program `a`: command: invalid type: string \"x\", expected a sequence"
            ),
            "{err}"
        );
        let err = parse("programs:\n  - name: a\n    suite: fast\n    command: [x]\n").unwrap_err();
        assert!(
            err.starts_with("m.yaml: program `a`: suite: unknown variant `fast`, expected `stress` or `packaged`"),
            "{err}"
        );
        let err =
            parse("programs:\n  - name: a\n    suite: stress\n    command: [x]\n    check: all\n")
                .unwrap_err();
        assert!(
            err.contains("program `a`: check: unknown variant `all`"),
            "{err}"
        );
        let err = parse("progs: []\n").unwrap_err();
        assert!(
            err.starts_with("m.yaml: not a programs manifest: unknown field `progs`"),
            "{err}"
        );
        let err = parse(
            "programs:\n  - name: a\n    suite: stress\n    command: [\"{bin}/a\", \"{threads}\"]\n",
        )
        .unwrap_err();
        assert_eq!(
            err,
            "m.yaml: program `a`: command[1]: unknown placeholder `{threads}` (known: {bin}, {programs}, {input}, {work}, {port})"
        );
        let err = parse(
            "programs:\n  - name: a\n    suite: stress\n    command: [x]\n  - name: a\n    suite: stress\n    command: [y]\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with("m.yaml: program `a`: name: given twice"),
            "{err}"
        );
        let err =
            parse("programs:\n  - name: Big\n    suite: stress\n    command: [x]\n").unwrap_err();
        assert!(
            err.contains("programs[0].name: `Big` is not a valid name"),
            "{err}"
        );
        let err =
            parse("programs:\n  - name: a\n    suite: stress\n    command: []\n").unwrap_err();
        assert!(
            err.starts_with("m.yaml: program `a`: command: empty"),
            "{err}"
        );
        let err = parse(
            "programs:\n  - name: a\n    suite: stress\n    command: [x]\n    server: {command: [s]}\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with("m.yaml: program `a`: server: missing field `stop`"),
            "{err}"
        );
        let err = parse(
            "programs:\n  - name: a\n    suite: stress\n    command: [x]\n    requires: [{exe: x}]\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with("m.yaml: program `a`: requires[0]: missing field `package`"),
            "{err}"
        );
    }

    #[test]
    fn placeholders_expand_and_braces_escape() {
        let values = Values {
            bin: Some("/b".into()),
            work: Some("/w".into()),
            port: Some(4242),
            ..Values::default()
        };
        assert_eq!(values.apply("{bin}/larson"), "/b/larson");
        assert_eq!(values.apply("-p{port} {work}/o"), "-p4242 /w/o");
        // No value yet: kept as written.
        assert_eq!(values.apply("{input}/x"), "{input}/x");
        assert_eq!(values.apply("awk '{{print $1}}'"), "awk '{print $1}'");
        assert!(check_placeholders("{{}}{bin}").is_ok());
        assert!(
            check_placeholders("{bni}")
                .unwrap_err()
                .starts_with("unknown placeholder `{bni}`")
        );
        assert!(
            check_placeholders("awk {print")
                .unwrap_err()
                .starts_with("an unclosed `{`")
        );
        assert!(
            check_placeholders("a}b")
                .unwrap_err()
                .starts_with("a lone `}`")
        );
    }
}
