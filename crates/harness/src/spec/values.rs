//! Values written as text in a spec: durations (`250ms`) and thread counts (`2` or `[1, 2]`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written as text: `250ms`, `2s`, `1.5s`, `100us`, `1m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecDuration(pub Duration);

impl FromStr for SpecDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration such as 250ms, 2s or 1m"))?;
        let seconds = match unit.trim() {
            "ns" => value * 1e-9,
            "us" | "µs" => value * 1e-6,
            "ms" => value * 1e-3,
            "s" | "" => value,
            "m" | "min" => value * 60.0,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{text}` (use ns, us, ms, s or m)"
                ));
            }
        };
        if !seconds.is_finite() || seconds > 24.0 * 3600.0 {
            return Err(format!("`{text}` is not a duration of at most a day"));
        }
        Ok(SpecDuration(Duration::from_secs_f64(seconds)))
    }
}

impl fmt::Display for SpecDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos.is_multiple_of(1_000_000_000) {
            write!(f, "{}s", nanos / 1_000_000_000)
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(f, "{}us", nanos / 1_000)
        } else {
            write!(f, "{nanos}ns")
        }
    }
}

impl Serialize for SpecDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpecDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = SpecDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 250ms, 2s or 1m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SpecDuration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SpecDuration, E> {
                self.visit_str(&format!("{v}s"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<SpecDuration, E> {
                self.visit_str(&format!("{v}s"))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// Thread counts to measure: one number or a list (`threads: 2` or `threads: [1, 2]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadCounts(pub Vec<u32>);

impl Serialize for ThreadCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ThreadCounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountsVisitor;
        impl<'de> Visitor<'de> for CountsVisitor {
            type Value = ThreadCounts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a thread count or a list of thread counts")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ThreadCounts, E> {
                u32::try_from(v)
                    .map(|v| ThreadCounts(vec![v]))
                    .map_err(|_| E::custom(format!("thread count {v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ThreadCounts, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("thread count {v} is negative")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<ThreadCounts, S::Error> {
                let mut counts = Vec::new();
                while let Some(count) = seq.next_element::<u32>()? {
                    counts.push(count);
                }
                Ok(ThreadCounts(counts))
            }
        }
        deserializer.deserialize_any(CountsVisitor)
    }
}
