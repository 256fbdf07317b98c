//! How a kind parameter is resolved: its default when the spec leaves it out and the range or
//! condition its value must meet. A parameter's declaration in `kinds.rs` names one [`Rule`]
//! (`positive(1024, 1 << 24)`, `or(false)`, ...), and every refusal it produces names the
//! file, the field (`params.<name>`), the value and what is expected.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use super::kinds::Lifetime;
use super::{SpecError, load_trace};

/// The parameter being resolved: where its errors point.
pub(super) struct Param<'a> {
    /// The spec file.
    file: &'a str,
    /// The parameter's name, without `params.`.
    name: &'static str,
}

impl<'a> Param<'a> {
    /// Parameter `name` of the spec `file`.
    pub(super) fn new(file: &'a str, name: &'static str) -> Self {
        Self { file, name }
    }

    /// `params.<name>` = `value` is refused: `expected` says what would be accepted.
    pub(super) fn invalid(&self, value: &dyn Display, expected: &str) -> SpecError {
        self.invalid_at("", value, expected)
    }

    /// A field nested in the parameter (`suffix` such as `.mix.brk`) is refused.
    fn invalid_at(&self, suffix: &str, value: &dyn Display, expected: &str) -> SpecError {
        SpecError::Invalid {
            file: self.file.to_owned(),
            field: format!("params.{}{suffix}", self.name),
            value: value.to_string(),
            expected: expected.to_owned(),
        }
    }
}

/// The default and the checks of one kind parameter.
pub(super) trait Rule {
    /// The type written in the spec.
    type Given;
    /// The resolved type.
    type Value;

    /// The value to run with, from the one given (`None`: left out), or why it is refused.
    fn resolve(&self, given: Option<Self::Given>, at: &Param<'_>)
    -> Result<Self::Value, SpecError>;

    /// This rule, then `holds` on its value; a value that fails is refused with `expected()`.
    /// The closures may read parameters declared before this one in the kind.
    fn check<P, M>(self, holds: P, expected: M) -> Checked<Self, P, M>
    where
        Self: Sized,
        P: Fn(&Self::Value) -> bool,
        M: Fn() -> String,
    {
        Checked {
            rule: self,
            holds,
            expected,
        }
    }
}

/// Any value, `default` when left out.
pub(super) fn or<T>(default: T) -> Or<T> {
    Or(default)
}

/// See [`or`].
pub(super) struct Or<T>(T);

impl<T: Clone> Rule for Or<T> {
    type Given = T;
    type Value = T;

    fn resolve(&self, given: Option<T>, _: &Param<'_>) -> Result<T, SpecError> {
        Ok(given.unwrap_or_else(|| self.0.clone()))
    }
}

/// A count between 1 and `max`, `default` when left out.
pub(super) fn positive(default: usize, max: usize) -> Between {
    Between {
        default,
        min: 1,
        max,
    }
}

/// A count between 0 and `max`, `default` when left out.
pub(super) fn at_most(default: usize, max: usize) -> Between {
    Between {
        default,
        min: 0,
        max,
    }
}

/// See [`positive`] and [`at_most`].
pub(super) struct Between {
    default: usize,
    min: usize,
    max: usize,
}

impl Rule for Between {
    type Given = usize;
    type Value = usize;

    fn resolve(&self, given: Option<usize>, at: &Param<'_>) -> Result<usize, SpecError> {
        let value = given.unwrap_or(self.default);
        if (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(at.invalid(&value, &format!("between {} and {}", self.min, self.max)))
        }
    }
}

/// See [`Rule::check`].
pub(super) struct Checked<R, P, M> {
    rule: R,
    holds: P,
    expected: M,
}

impl<R, P, M> Rule for Checked<R, P, M>
where
    R: Rule,
    R::Value: Display,
    P: Fn(&R::Value) -> bool,
    M: Fn() -> String,
{
    type Given = R::Given;
    type Value = R::Value;

    fn resolve(&self, given: Option<R::Given>, at: &Param<'_>) -> Result<R::Value, SpecError> {
        let value = self.rule.resolve(given, at)?;
        if (self.holds)(&value) {
            Ok(value)
        } else {
            Err(at.invalid(&value, &(self.expected)()))
        }
    }
}

/// A generated operation stream ([`maple::StreamSpec`]), its defaults for the fields left out;
/// a refused field is named by its path in the stream (`params.stream.mix.brk`).
pub(super) fn stream() -> Stream {
    Stream
}

/// See [`stream`].
pub(super) struct Stream;

impl Rule for Stream {
    type Given = maple::StreamSpec;
    type Value = maple::StreamSpec;

    fn resolve(
        &self,
        given: Option<maple::StreamSpec>,
        at: &Param<'_>,
    ) -> Result<maple::StreamSpec, SpecError> {
        let stream = given.unwrap_or_default();
        stream.validate().map_err(|e| {
            let value = yaml_serde::to_value(&stream)
                .ok()
                .and_then(|v| e.field.split('.').try_fold(v, |v, key| v.get(key).cloned()))
                .and_then(|v| yaml_serde::to_string(&v).ok())
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| "?".into());
            at.invalid_at(&format!(".{}", e.field), &value, e.expected)
        })?;
        Ok(stream)
    }
}

/// A trace file, required: its path relative to the spec file's directory, resolved to an
/// absolute path and parsed once here so that a bad trace is refused before anything runs.
pub(super) fn trace_file() -> TraceFile {
    TraceFile
}

/// See [`trace_file`].
pub(super) struct TraceFile;

impl Rule for TraceFile {
    type Given = String;
    type Value = PathBuf;

    fn resolve(&self, given: Option<String>, at: &Param<'_>) -> Result<PathBuf, SpecError> {
        let Some(trace) = given else {
            return Err(at.invalid(
                &"(missing)",
                "the path of a trace file, relative to the spec file (e.g. traces/python-sqlite-json.trace)",
            ));
        };
        let dir = Path::new(at.file).parent().unwrap_or(Path::new(""));
        let path = dir.join(trace);
        let path = std::path::absolute(&path).unwrap_or(path);
        load_trace(&path).map_err(|message| SpecError::Trace {
            file: at.file.to_owned(),
            trace: path.display().to_string(),
            message,
        })?;
        Ok(path)
    }
}

/// The most object sizes (caches) one `lifetimes` spec may name.
pub(super) const MAX_SIZES: usize = 16;

/// A list of distinct object sizes, `[default]` when left out.
pub(super) fn object_sizes(default: usize) -> ObjectSizes {
    ObjectSizes(default)
}

/// See [`object_sizes`].
pub(super) struct ObjectSizes(usize);

impl Rule for ObjectSizes {
    type Given = Vec<usize>;
    type Value = Vec<usize>;

    fn resolve(&self, given: Option<Vec<usize>>, at: &Param<'_>) -> Result<Vec<usize>, SpecError> {
        let sizes = given.unwrap_or_else(|| vec![self.0]);
        let shown = || format!("{sizes:?}");
        if sizes.is_empty() || sizes.len() > MAX_SIZES {
            return Err(at.invalid(&shown(), &format!("between 1 and {MAX_SIZES} sizes")));
        }
        for (i, &size) in sizes.iter().enumerate() {
            if size == 0 || size > object_alloc::MAX_OBJECT_SIZE {
                return Err(at.invalid_at(
                    &format!("[{i}]"),
                    &size,
                    &format!("between 1 and {} bytes", object_alloc::MAX_OBJECT_SIZE),
                ));
            }
            if sizes[..i].contains(&size) {
                return Err(at.invalid_at(
                    &format!("[{i}]"),
                    &size,
                    "a size not listed before (one cache per size)",
                ));
            }
        }
        Ok(sizes)
    }
}

/// A lifetime distribution, exponential with a mean of 1,000 ticks when left out; a
/// parameter that makes no distribution (or one without a finite mean) is named by its path
/// (`params.lifetime.shape`).
pub(super) fn lifetime() -> LifetimeRule {
    LifetimeRule
}

/// See [`lifetime`].
pub(super) struct LifetimeRule;

impl Rule for LifetimeRule {
    type Given = Lifetime;
    type Value = Lifetime;

    fn resolve(&self, given: Option<Lifetime>, at: &Param<'_>) -> Result<Lifetime, SpecError> {
        let lifetime = given.unwrap_or(Lifetime::Exponential { mean: 1000.0 });
        let bad = match lifetime {
            Lifetime::Exponential { mean } => (!(mean.is_finite() && mean >= 1.0)).then_some((
                ".mean",
                mean,
                "a finite mean of at least 1 tick",
            )),
            Lifetime::Pareto { shape, scale } => {
                if !(shape.is_finite() && shape > 1.0) {
                    Some((
                        ".shape",
                        shape,
                        "a finite tail index above 1 (at or below 1 the mean lifetime is infinite)",
                    ))
                } else if !(scale.is_finite() && scale >= 1.0) {
                    Some((
                        ".scale",
                        scale,
                        "a finite shortest lifetime of at least 1 tick",
                    ))
                } else {
                    None
                }
            }
        };
        match bad {
            Some((path, value, expected)) => Err(at.invalid_at(path, &value, expected)),
            None => Ok(lifetime),
        }
    }
}
