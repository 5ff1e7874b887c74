//! The Avro integer types (`int`, `long` and their logical types) in one
//! table: each is written as a zig-zag varint and maps to a JSON integer
//! counting the unit the table names.

use apache_avro::types::Value;
use apache_avro::Schema;

/// An Avro integer type: how to build its value from the number, and what
/// the number counts (for messages).
#[derive(Clone, Copy)]
pub(crate) enum Integral {
    /// An `int` or an int-based logical type (32 bits).
    Int(fn(i32) -> Value, &'static str),
    /// A `long` or a long-based logical type (64 bits).
    Long(fn(i64) -> Value, &'static str),
}

impl Integral {
    /// The integer type `schema` is, if it is one.
    pub(crate) fn of(schema: &Schema) -> Option<Self> {
        use Integral::{Int, Long};
        use Schema as S;
        use Value as V;
        Some(match schema {
            S::Int => Int(V::Int, "32-bit integer"),
            S::Date => Int(V::Date, "days since the epoch"),
            S::TimeMillis => Int(V::TimeMillis, "milliseconds after midnight"),
            S::Long => Long(V::Long, "64-bit integer"),
            S::TimeMicros => Long(V::TimeMicros, "microseconds after midnight"),
            S::TimestampMillis => Long(V::TimestampMillis, "milliseconds since the epoch"),
            S::TimestampMicros => Long(V::TimestampMicros, "microseconds since the epoch"),
            S::TimestampNanos => Long(V::TimestampNanos, "nanoseconds since the epoch"),
            S::LocalTimestampMillis => {
                Long(V::LocalTimestampMillis, "milliseconds since the epoch")
            }
            S::LocalTimestampMicros => {
                Long(V::LocalTimestampMicros, "microseconds since the epoch")
            }
            S::LocalTimestampNanos => Long(V::LocalTimestampNanos, "nanoseconds since the epoch"),
            _ => return None,
        })
    }

    /// The value of `number` if it fits, else what was expected (`an int
    /// (days since the epoch)`).
    pub(crate) fn value(self, number: Option<i64>) -> Result<Value, String> {
        match self {
            Self::Int(build, unit) => number
                .and_then(|n| i32::try_from(n).ok())
                .map(build)
                .ok_or_else(|| format!("an int ({unit})")),
            Self::Long(build, unit) => number.map(build).ok_or_else(|| format!("a long ({unit})")),
        }
    }
}
