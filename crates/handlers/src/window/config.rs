//! The `window` handler's settings, read from its `handler:` mapping.
//!
//! Every problem is recorded at the key (or aggregate) it is about, with a
//! hint, and reading goes on so that one `spate validate` shows them all.
//! Settings that are read are valid: durations are whole milliseconds in
//! range, `size` is a whole number of `slide`s, pointers are JSON
//! pointers, output field names are unique and leave `key`,
//! `window_start` and `window_end` to the handler.

use spate_connector::config::{did_you_mean, quote_list};
use spate_connector::{ConfigNode, ConfigReader, NodeKind, Span};

use super::time::{Millis, MAX_DURATION_MS};

/// Most windows one event may fall in (`size / slide`).
pub const MAX_WINDOWS_PER_EVENT: i64 = 1_000;

/// Keys one partition keeps state for when `max_keys:` is not written.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// The largest `max_keys:` accepted.
pub const MAX_MAX_KEYS: u64 = 10_000_000;

/// Output fields the handler writes itself.
pub const RESERVED_FIELDS: &[&str] = &["key", "window_start", "window_end"];

/// Every aggregate, as written in the file.
pub const AGGREGATES: &[&str] = &["count", "sum", "min", "max", "avg", "last"];

/// Other names for the aggregates, for "did you mean".
const SYNONYMS: &[(&str, &str)] = &[
    ("average", "avg"),
    ("mean", "avg"),
    ("total", "sum"),
    ("minimum", "min"),
    ("maximum", "max"),
    ("latest", "last"),
    ("cnt", "count"),
];

/// Where an event's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `$key`: the event's own key.
    EventKey,
    /// A JSON pointer into the payload.
    Pointer(String),
}

/// Where an event's time comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeSource {
    /// `$timestamp`: the event's own timestamp.
    EventTimestamp,
    /// A JSON pointer into the payload: epoch milliseconds or RFC 3339.
    Pointer(String),
}

/// When windows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Once, when the window closes.
    OnClose,
    /// After every event added to it.
    OnUpdate,
}

/// What an aggregate computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateKind {
    /// Events in the window.
    Count,
    /// Sum of a numeric field.
    Sum,
    /// Smallest value of a numeric field.
    Min,
    /// Largest value of a numeric field.
    Max,
    /// Mean of a numeric field.
    Avg,
    /// The field's value in the event with the greatest event time.
    Last,
}

impl AggregateKind {
    fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "count" => Self::Count,
            "sum" => Self::Sum,
            "min" => Self::Min,
            "max" => Self::Max,
            "avg" => Self::Avg,
            "last" => Self::Last,
            _ => return None,
        })
    }

    /// The word the file uses.
    pub fn word(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Min => "min",
            Self::Max => "max",
            Self::Avg => "avg",
            Self::Last => "last",
        }
    }
}

/// One output field and what it aggregates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// The output field.
    pub name: String,
    /// The aggregate.
    pub kind: AggregateKind,
    /// The JSON pointer it reads (`None` for `count`).
    pub field: Option<String>,
}

/// The settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where the key comes from.
    pub key: KeySource,
    /// Where the event time comes from.
    pub time: TimeSource,
    /// Window length, ms.
    pub size_ms: i64,
    /// Distance between window starts, ms (`size_ms` for tumbling windows).
    pub slide_ms: i64,
    /// How far behind its key's latest event time an event may be, ms.
    pub lateness_ms: i64,
    /// When windows are written.
    pub emit: Emit,
    /// Output fields in order.
    pub aggregates: Vec<Aggregate>,
    /// Most keys one partition keeps state for (see the module docs).
    pub max_keys: usize,
}

impl Settings {
    /// Whether handling an event needs its payload as JSON.
    pub fn reads_payload(&self) -> bool {
        matches!(self.key, KeySource::Pointer(_))
            || matches!(self.time, TimeSource::Pointer(_))
            || self.aggregates.iter().any(|a| a.field.is_some())
    }

    /// A stable hash of what the stored state depends on (window size and
    /// slide, each aggregate's kind and field, in order); state written
    /// under other settings is not restored.
    pub fn fingerprint(&self) -> u64 {
        let mut text = format!("window/1;{};{}", self.size_ms, self.slide_ms);
        for aggregate in &self.aggregates {
            text.push(';');
            text.push_str(aggregate.kind.word());
            text.push('=');
            text.push_str(aggregate.field.as_deref().unwrap_or(""));
        }
        // FNV-1a: stable across builds and platforms.
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    }
}

/// Why a text is not a JSON pointer, if it is not one.
fn pointer_problem(text: &str) -> Option<&'static str> {
    if !text.starts_with('/') {
        return Some("a JSON pointer starts with `/`");
    }
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Some("`~` in a JSON pointer must be `~0` (for `~`) or `~1` (for `/`)");
        }
    }
    None
}

/// `reading.temperature` → `/reading/temperature`, for hints.
fn as_pointer(text: &str) -> String {
    let parts: Vec<String> = text
        .split('.')
        .map(|p| p.replace('~', "~0").replace('/', "~1"))
        .collect();
    format!("/{}", parts.join("/"))
}

fn pointer_hint(text: &str, example: &str) -> String {
    if text.starts_with('/') || text.is_empty() {
        format!("write a JSON pointer, e.g. `{example}`")
    } else {
        format!(
            "write a JSON pointer: did you mean `{}`?",
            as_pointer(text.trim_start_matches('$'))
        )
    }
}

/// Reads `key` or `time`: the `$` form, or a pointer.
fn read_source(
    config: &mut ConfigReader<'_>,
    key: &'static str,
    own: &'static str,
    example: &str,
) -> Option<Option<String>> {
    let Some(text) = config.string(key) else {
        return (!config.has(key)).then_some(None);
    };
    if text == own {
        return Some(None);
    }
    let what = match key {
        "key" => "the event's key",
        _ => "the event's timestamp",
    };
    if text.starts_with('$') {
        config.error_at_key(
            key,
            format!("unknown `{key}` `{text}`"),
            Some(format!(
                "`{own}` is {what}; anything else is a JSON pointer into the payload, e.g. `{example}`"
            )),
        );
        return None;
    }
    if let Some(problem) = pointer_problem(&text) {
        config.error_at_key(
            key,
            format!("`{key}` must be `{own}` or a JSON pointer, found `{text}`: {problem}"),
            Some(pointer_hint(&text, example)),
        );
        return None;
    }
    Some(Some(text))
}

/// Reads a duration that must be whole milliseconds in range, and above
/// zero unless `zero_ok`. `Some(None)`: not written.
fn read_millis(
    config: &mut ConfigReader<'_>,
    key: &'static str,
    zero_ok: bool,
) -> Option<Option<i64>> {
    let Some(duration) = config.duration(key) else {
        return (!config.has(key)).then_some(None);
    };
    let example = match key {
        "size" => "`size: 1m`",
        "slide" => "`slide: 15s`",
        _ => "`allowed_lateness: 30s`",
    };
    if duration.subsec_nanos() % 1_000_000 != 0 {
        config.error_at_key(
            key,
            format!("`{key}` must be a whole number of milliseconds"),
            Some(format!(
                "windows are aligned to milliseconds; write e.g. {example}"
            )),
        );
        return None;
    }
    let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    if ms == 0 && !zero_ok {
        config.error_at_key(
            key,
            format!("`{key}` must be longer than zero"),
            Some(format!("write e.g. {example}")),
        );
        return None;
    }
    if ms > MAX_DURATION_MS {
        config.error_at_key(
            key,
            format!("`{key}` must be at most {}", Millis(MAX_DURATION_MS)),
            Some(format!("write e.g. {example}")),
        );
        return None;
    }
    Some(Some(ms))
}

/// `size` and `slide`, checked against each other.
fn read_size_and_slide(config: &mut ConfigReader<'_>) -> Option<(i64, i64)> {
    let size = read_millis(config, "size", false);
    let slide = read_millis(config, "slide", false);
    if size == Some(None) {
        config.missing(
            "size",
            Some(
                "give the window length, e.g. `size: 1m` (add `slide: 15s` for sliding windows)"
                    .to_owned(),
            ),
        );
    }
    let size = size??;
    let slide = slide?.unwrap_or(size);
    if slide > size {
        config.error_at_key(
            "slide",
            format!("`slide` ({}) is longer than `size` ({})", Millis(slide), Millis(size)),
            Some("a window starts every `slide`; make it at most `size`, or leave it out for tumbling windows".to_owned()),
        );
        return None;
    }
    if size % slide != 0 {
        let windows = (size + slide / 2) / slide;
        let suggestion = (size % windows == 0).then(|| size / windows);
        config.error_at_key(
            "slide",
            format!(
                "`size` ({}) is not a whole number of `slide`s ({})",
                Millis(size),
                Millis(slide)
            ),
            Some(match suggestion {
                Some(s) => format!(
                    "each event falls in `size / slide` windows; did you mean `slide: {}`?",
                    Millis(s)
                ),
                None => "each event falls in `size / slide` windows; choose a slide that divides the size".to_owned(),
            }),
        );
        return None;
    }
    if size / slide > MAX_WINDOWS_PER_EVENT {
        config.error_at_key(
            "slide",
            format!(
                "`size` ({}) / `slide` ({}) puts each event in {} windows, more than {MAX_WINDOWS_PER_EVENT}",
                Millis(size),
                Millis(slide),
                size / slide
            ),
            Some("make `slide` longer".to_owned()),
        );
        return None;
    }
    Some((size, slide))
}

/// An aggregate word that is none of [`AGGREGATES`], with the closest one
/// (or its usual synonym) as the hint.
fn unknown_aggregate(config: &ConfigReader<'_>, path: &str, word: &str, span: Span) {
    let synonym = SYNONYMS
        .iter()
        .find(|(other, _)| other.eq_ignore_ascii_case(word))
        .map(|(_, ours)| *ours);
    let hint = match synonym.or_else(|| did_you_mean(word, AGGREGATES.iter().copied())) {
        Some(best) => format!("did you mean `{best}`? (one of {})", quote_list(AGGREGATES)),
        None => format!("use one of {}", quote_list(AGGREGATES)),
    };
    config.error(
        span,
        path,
        format!("unknown aggregate `{word}`"),
        Some(hint),
    );
}

/// Reads one aggregate written as `count` or `{sum: /field}`.
fn read_aggregate(
    config: &ConfigReader<'_>,
    name: &str,
    path: &str,
    node: &ConfigNode,
) -> Option<Aggregate> {
    let unknown = |word: &str, span: Span| unknown_aggregate(config, path, word, span);
    match &node.kind {
        NodeKind::Scalar { text, .. } => match AggregateKind::from_word(text) {
            Some(AggregateKind::Count) => Some(Aggregate {
                name: name.to_owned(),
                kind: AggregateKind::Count,
                field: None,
            }),
            Some(kind) => {
                config.error(
                    node.span,
                    path,
                    format!("`{text}` needs the field it aggregates"),
                    Some(format!("write `{name}: {{{}: /field}}`", kind.word())),
                );
                None
            }
            None => {
                unknown(text, node.span);
                None
            }
        },
        NodeKind::Map(entries) if entries.len() == 1 => {
            let (word, word_span, value) = &entries[0];
            let kind = match AggregateKind::from_word(word) {
                Some(AggregateKind::Count) => {
                    config.error(
                        *word_span,
                        path,
                        "`count` takes no field: it counts the window's events",
                        Some(format!("write `{name}: count`")),
                    );
                    return None;
                }
                Some(kind) => kind,
                None => {
                    unknown(word, *word_span);
                    return None;
                }
            };
            let example = format!("{name}: {{{word}: /temperature}}");
            let Some(field) = value.as_text() else {
                config.error(
                    value.span,
                    format!("{path}.{word}"),
                    format!(
                        "the field of `{word}` must be a JSON pointer, found {}",
                        value.type_name()
                    ),
                    Some(format!("e.g. `{example}`")),
                );
                return None;
            };
            if let Some(problem) = pointer_problem(field) {
                config.error(
                    value.span,
                    format!("{path}.{word}"),
                    format!(
                        "the field of `{word}` must be a JSON pointer, found `{field}`: {problem}"
                    ),
                    Some(pointer_hint(field, "/temperature")),
                );
                return None;
            }
            Some(Aggregate {
                name: name.to_owned(),
                kind,
                field: Some(field.to_owned()),
            })
        }
        _ => {
            config.error(
                node.span,
                path,
                format!("aggregate `{name}` must be `count` or a one-key mapping such as `{{sum: /temperature}}`, found {}", node.type_name()),
                Some(format!("aggregates are {}", quote_list(AGGREGATES))),
            );
            None
        }
    }
}

fn read_aggregates(config: &mut ConfigReader<'_>) -> Option<Vec<Aggregate>> {
    const HINT: &str = "map output fields to aggregates, e.g. `aggregates: {readings: count, temperature_avg: {avg: /temperature}}`";
    let path = config.child_path("aggregates");
    let Some(node) = config.node("aggregates") else {
        config.missing("aggregates", Some(HINT.to_owned()));
        return None;
    };
    let NodeKind::Map(entries) = &node.kind else {
        config.error(
            node.span,
            path,
            format!(
                "`aggregates` must be a mapping of output field to aggregate, found {}",
                node.type_name()
            ),
            Some(HINT.to_owned()),
        );
        return None;
    };
    if entries.is_empty() {
        config.error(
            node.span,
            path,
            "`aggregates` is empty",
            Some(HINT.to_owned()),
        );
        return None;
    }
    let mut aggregates = Vec::new();
    let mut ok = true;
    for (index, (name, name_span, value)) in entries.iter().enumerate() {
        let entry_path = format!("{path}.{name}");
        if RESERVED_FIELDS.contains(&name.as_str()) {
            config.error(
                *name_span,
                entry_path.clone(),
                format!("output field `{name}` is written by the handler itself"),
                Some(format!(
                    "every output has {}; name the aggregate otherwise, e.g. `{name}_value`",
                    quote_list(RESERVED_FIELDS)
                )),
            );
            ok = false;
        }
        if let Some((_, first, _)) = entries[..index].iter().find(|(n, _, _)| n == name) {
            config.error(
                *name_span,
                entry_path.clone(),
                format!("output field `{name}` is declared twice"),
                Some(format!(
                    "the first is at line {}; give each aggregate its own name",
                    first.line
                )),
            );
            ok = false;
        }
        match read_aggregate(config, name, &entry_path, value) {
            Some(aggregate) => aggregates.push(aggregate),
            None => ok = false,
        }
    }
    ok.then_some(aggregates)
}

/// Reads every setting; `None` when any of them is invalid (each problem
/// is recorded in `config`).
pub fn read(config: &mut ConfigReader<'_>) -> Option<Settings> {
    let key = read_source(config, "key", "$key", "/device");
    let time = read_source(config, "time", "$timestamp", "/ts");
    let size_and_slide = read_size_and_slide(config);
    let lateness = read_millis(config, "allowed_lateness", true);
    let emit = match config.one_of("emit", &["on_close", "on_update"]) {
        Some("on_update") => Some(Emit::OnUpdate),
        Some(_) => Some(Emit::OnClose),
        None if config.has("emit") => None,
        None => Some(Emit::OnClose),
    };
    let aggregates = read_aggregates(config);
    let max_keys = read_max_keys(config);
    let (size_ms, slide_ms) = size_and_slide?;
    Some(Settings {
        key: key?.map_or(KeySource::EventKey, KeySource::Pointer),
        time: time?.map_or(TimeSource::EventTimestamp, TimeSource::Pointer),
        size_ms,
        slide_ms,
        lateness_ms: lateness?.unwrap_or(0),
        emit: emit?,
        aggregates: aggregates?,
        max_keys: max_keys?,
    })
}

/// `max_keys`: 1 to [`MAX_MAX_KEYS`], [`DEFAULT_MAX_KEYS`] when absent.
fn read_max_keys(config: &mut ConfigReader<'_>) -> Option<usize> {
    match config.u64("max_keys") {
        Some(keys @ 1..=MAX_MAX_KEYS) => usize::try_from(keys).ok(),
        Some(keys) => {
            config.error_at_key(
                "max_keys",
                format!("`max_keys` must be between 1 and {MAX_MAX_KEYS}, found {keys}"),
                Some(format!(
                    "it bounds the keys one partition keeps windows for; the default is {DEFAULT_MAX_KEYS}"
                )),
            );
            None
        }
        None if config.has("max_keys") => None,
        None => Some(DEFAULT_MAX_KEYS),
    }
}
