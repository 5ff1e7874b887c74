//! The README's "Limits" tables: the loader's settings and bounds, then
//! the bounds of expressions, decoding, connectors and handlers, each
//! rendered from the constant that enforces it. A test fails when the
//! README's copy differs (`SPATE_BLESS_README=1 cargo test -p spate --lib
//! limits` rewrites it).

use std::time::Duration;

use spate_loader::limits::{other_limits, rows, show_duration, Bytes, Count, Setting};

/// Bounds of expressions and decoding, whatever the payload.
fn evaluation_limits() -> Vec<[String; 3]> {
    use spate_formats::{avro, avro_depth};
    use spate_handlers::expr;
    let bytes = |n: usize| Bytes(u64::try_from(n).unwrap_or(u64::MAX)).show();
    vec![
        [
            "a jq expression's text".to_owned(),
            format!("at most {}", bytes(expr::MAX_EXPR_BYTES)),
            "spate::handler::expr::MAX_EXPR_BYTES".to_owned(),
        ],
        [
            "brackets nested in a jq expression".to_owned(),
            format!("at most {} levels", expr::MAX_NESTING),
            "spate::handler::expr::MAX_NESTING".to_owned(),
        ],
        [
            "a jq expression's parse tree".to_owned(),
            format!("at most {} levels", expr::MAX_DEPTH),
            "spate::handler::expr::MAX_DEPTH".to_owned(),
        ],
        [
            "results of one `map` evaluation".to_owned(),
            format!("at most {}", Count(expr::MAX_RESULTS as u64).show()),
            "spate::handler::expr::MAX_RESULTS".to_owned(),
        ],
        [
            "sandboxed evaluations at once (processes)".to_owned(),
            format!("{}", expr::sandbox::POOL_SIZE),
            "spate::handler::expr::sandbox::POOL_SIZE".to_owned(),
        ],
        [
            "stack of a sandboxed evaluation".to_owned(),
            bytes(expr::sandbox::CHILD_STACK),
            "spate::handler::expr::sandbox::CHILD_STACK".to_owned(),
        ],
        [
            "nesting of an Avro datum under a recursive schema".to_owned(),
            format!("at most {} levels", avro_depth::MAX_AVRO_DEPTH),
            "spate::format::avro_depth::MAX_AVRO_DEPTH".to_owned(),
        ],
        [
            "items of an Avro datum under a recursive schema".to_owned(),
            format!("at most {}", Count(avro_depth::MAX_AVRO_ITEMS).show()),
            "spate::format::avro_depth::MAX_AVRO_ITEMS".to_owned(),
        ],
        [
            "memory one Avro datum may allocate".to_owned(),
            format!("at most {}", bytes(avro::MAX_AVRO_ALLOCATION)),
            "spate::format::avro::MAX_AVRO_ALLOCATION".to_owned(),
        ],
    ]
}

/// Connector and handler settings with a range, each checked by the
/// component that reads it: setting, range, the constant that bounds it.
pub fn component_limits() -> Vec<[String; 3]> {
    let row = |setting: &str, range: String, constant: &str| {
        [format!("`{setting}`"), range, constant.to_owned()]
    };
    let count = |n: u64| Count(n).show();
    vec![
        row(
            "generate: partitions",
            format!("1 – {}", count(spate_builtin::generate::MAX_PARTITIONS)),
            "spate_builtin::generate::MAX_PARTITIONS",
        ),
        row(
            "generate: payload_bytes",
            format!(
                "at most {}",
                Bytes(spate_builtin::generate::MAX_PAYLOAD_BYTES).show()
            ),
            "spate_builtin::generate::MAX_PAYLOAD_BYTES",
        ),
        row(
            "mqtt: partitions",
            format!("1 – {}", count(spate_mqtt::source::MAX_PARTITIONS)),
            "spate_mqtt::source::MAX_PARTITIONS",
        ),
        row(
            "mqtt: max_buffered",
            format!("1 – {}", count(spate_mqtt::source::MAX_MAX_BUFFERED as u64)),
            "spate_mqtt::source::MAX_MAX_BUFFERED",
        ),
        row(
            "jetstream: partitions",
            format!("1 – {}", count(spate_nats::jetstream::MAX_PARTITIONS)),
            "spate_nats::jetstream::MAX_PARTITIONS",
        ),
        row(
            "jetstream: max_ack_pending",
            format!("1 – {}", count(spate_nats::jetstream::MAX_ACK_PENDING)),
            "spate_nats::jetstream::MAX_ACK_PENDING",
        ),
        row(
            "postgres: batch_size",
            format!("1 – {}", count(spate_postgres::config::MAX_BATCH_SIZE)),
            "spate_postgres::config::MAX_BATCH_SIZE",
        ),
        row(
            &format!(
                "filter, map, route: limits.time (default {})",
                show_duration(spate_handlers::expr::limits::DEFAULT_TIME)
            ),
            format!(
                "{} – {}",
                show_duration(spate_handlers::expr::limits::MIN_TIME),
                show_duration(spate_handlers::expr::limits::MAX_TIME)
            ),
            "spate::handler::expr::limits::{DEFAULT_TIME, MIN_TIME, MAX_TIME}",
        ),
        row(
            &format!(
                "filter, map, route: limits.memory (default {})",
                Bytes(spate_handlers::expr::limits::DEFAULT_MEMORY).show()
            ),
            format!(
                "{} – {}",
                Bytes(spate_handlers::expr::limits::MIN_MEMORY).show(),
                Bytes(spate_handlers::expr::limits::MAX_MEMORY).show()
            ),
            "spate::handler::expr::limits::{DEFAULT_MEMORY, MIN_MEMORY, MAX_MEMORY}",
        ),
        row(
            &format!(
                "window: max_keys (default {})",
                count(spate_handlers::window::config::DEFAULT_MAX_KEYS as u64)
            ),
            format!(
                "1 – {}",
                count(spate_handlers::window::config::MAX_MAX_KEYS)
            ),
            "spate::handler::window::config::{DEFAULT_MAX_KEYS, MAX_MAX_KEYS}",
        ),
        row(
            "window: size, slide, allowed_lateness",
            format!(
                "at most {}",
                show_duration(Duration::from_millis(
                    u64::try_from(spate_handlers::window::time::MAX_DURATION_MS).unwrap_or(0)
                ))
            ),
            "spate::handler::window::time::MAX_DURATION_MS",
        ),
    ]
}

/// The README's "Limits" tables, rendered from the constants that enforce each.
pub fn render_markdown() -> String {
    let mut out = String::from("| Setting | Default | Range | Bounds |\n|---|---|---|---|\n");
    for [name, default, range, about] in rows() {
        out.push_str(&format!("| {name} | {default} | {range} | {about} |\n"));
    }
    out.push_str("\n| Bounded | Limit | Enforced by |\n|---|---|---|\n");
    for [what, bound, constant] in other_limits().into_iter().chain(evaluation_limits()) {
        out.push_str(&format!("| {what} | {bound} | `{constant}` |\n"));
    }
    out.push_str("\n| Connector or handler setting | Range | Enforced by |\n|---|---|---|\n");
    for [setting, range, constant] in component_limits() {
        out.push_str(&format!("| {setting} | {range} | `{constant}` |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_limits_table_is_the_one_the_code_renders() {
        const START: &str = "<!-- limits:start -->\n";
        const END: &str = "<!-- limits:end -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap_or_default();
        let (Some(start), Some(end)) = (readme.find(START), readme.find(END)) else {
            panic!("README.md has no `{START}` … `{END}` section");
        };
        let written = &readme[start + START.len()..end];
        let rendered = render_markdown();
        if written == rendered {
            return;
        }
        if std::env::var_os("SPATE_BLESS_README").is_some() {
            let updated = format!(
                "{}{rendered}{}",
                &readme[..start + START.len()],
                &readme[end..]
            );
            if let Err(error) = std::fs::write(path, updated) {
                panic!("cannot write {path}: {error}");
            }
            return;
        }
        panic!(
            "README.md's Limits tables differ from crates/loader/src/limits.rs and src/limits_table.rs; regenerate them with \
             `SPATE_BLESS_README=1 cargo test -p spate --lib limits`\n--- README\n{written}\n--- code\n{rendered}"
        );
    }
}
