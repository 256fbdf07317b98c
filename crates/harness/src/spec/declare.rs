//! The macro that turns the one declaration of the kinds and their parameters (in `kinds.rs`)
//! into everything that needs them, so that no list of parameters is written twice:
//!
//! - [`KindName`](super::KindName): the names, `ALL`, `as_str`, `description` (with the
//!   parameters each kind takes) and the per-kind parameter list that refusals quote;
//! - [`Params`](super::Params): the spec's `params:` mapping, one optional field per
//!   parameter name (declared by the first kind that takes it, with the type written in the
//!   file), unknown names refused, plus the name list `--set` accepts;
//! - [`Kind`](super::Kind): one variant per kind with its parameters resolved, and
//!   `Kind::resolve`, which applies each parameter's rule ([`Rule`](super::rules::Rule)) in
//!   declaration order, so a rule may read the parameters declared before it.

/// Declares the workload kinds and their parameters; see the module documentation.
///
/// ```text
/// resolve(spec, file);          // names the rules may use: the WorkloadSpec and its file
/// /// doc of the kind
/// Name = "spec-name", "one line on what it does" {
///     #[check(<expr returning Result<(), SpecError>>)]   // optional, before the parameters
///     /// doc of the parameter for this kind
///     param: ResolvedType = <rule> [, written as FileType] [, values "a|b"];
/// }
/// ```
///
/// `written as` marks the first kind that takes a parameter: it adds the field to
/// [`Params`](super::Params), in declaration order. `values` adds a hint to the parameter's
/// name in the kind's description.
macro_rules! declare_kinds {
    (
        resolve($spec:ident, $file:ident);
        $(
            $(#[doc = $kind_doc:literal])*
            $Kind:ident = $name:literal, $summary:literal {
                $(#[check($check:expr)])?
                $(
                    $(#[doc = $doc:literal])*
                    $param:ident: $Value:ty = $rule:expr
                        $(, written as $Given:ty)?
                        $(, values $values:literal)?
                    ;
                )*
            }
        )*
    ) => {
        /// The workload kinds the harness implements.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum KindName {
            $(
                $(#[doc = $kind_doc])*
                #[serde(rename = $name)]
                $Kind,
            )*
        }

        impl KindName {
            /// Every kind, in the order `list` shows them.
            pub const ALL: [KindName; [$($name),*].len()] = [$(KindName::$Kind),*];

            /// The name used in specs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(KindName::$Kind => $name,)*
                }
            }

            /// One line on what the kind does, with the parameters it takes.
            pub fn description(self) -> String {
                let (summary, params): (&str, &[&str]) = match self {
                    $(
                        KindName::$Kind => (
                            $summary,
                            &[$(concat!(stringify!($param) $(, " ", $values)?)),*],
                        ),
                    )*
                };
                format!("{summary} (params: {})", params.join(", "))
            }

            /// The parameters that apply to the kind.
            pub(super) fn params(self) -> &'static [&'static str] {
                match self {
                    $(KindName::$Kind => &[$(stringify!($param)),*],)*
                }
            }
        }

        declare_kinds!(@params $($($([$param: $Given, $name])?)*)*);

        /// A kind with its parameters resolved to their defaults.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind")]
        pub enum Kind {
            $(
                #[doc = concat!("See [`KindName::", stringify!($Kind), "`].")]
                #[serde(rename = $name)]
                $Kind {
                    $(
                        $(#[doc = $doc])*
                        #[doc = ""]
                        #[doc = concat!("Default and check: `", stringify!($rule), "`.")]
                        $param: $Value,
                    )*
                },
            )*
        }

        impl Kind {
            /// The kind's name.
            pub fn name(&self) -> KindName {
                match self {
                    $(Kind::$Kind { .. } => KindName::$Kind,)*
                }
            }

            /// The spec's kind with every parameter resolved: the kind's own check, then each
            /// parameter's rule in declaration order. Parameters the kind does not take were
            /// refused before.
            pub(super) fn resolve($spec: &WorkloadSpec, $file: &str) -> Result<Kind, SpecError> {
                match $spec.kind {
                    $(
                        KindName::$Kind => {
                            $($check?;)?
                            $(
                                let $param: $Value = Rule::resolve(
                                    &$rule,
                                    $spec.params.$param.clone(),
                                    &Param::new($file, stringify!($param)),
                                )?;
                            )*
                            Ok(Kind::$Kind { $($param),* })
                        }
                    )*
                }
            }
        }
    };

    (@params $([$param:ident: $Given:ty, $first:literal])*) => {
        /// Kind parameters as written in the spec; each applies to some kinds only (see
        /// [`KindName::description`]), and [`WorkloadSpec::validate`] refuses one that does
        /// not apply. What each means, its default and its range: [`Kind`].
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Params {
            $(
                #[doc = concat!(
                    "`params.", stringify!($param), "` (first taken by `", $first,
                    "`; see [`Kind`] for every kind that takes it)."
                )]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $param: Option<$Given>,
            )*
        }

        impl Params {
            /// The parameters given, in declaration order.
            pub(super) fn given(&self) -> Vec<&'static str> {
                let mut given = Vec::new();
                $(
                    if self.$param.is_some() {
                        given.push(stringify!($param));
                    }
                )*
                given
            }

            /// Names of every parameter, for `--set` lookups.
            pub(super) const NAMES: &[&str] = &[$(stringify!($param)),*];
        }
    };
}

pub(super) use declare_kinds;
