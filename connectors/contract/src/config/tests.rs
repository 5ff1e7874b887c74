//! Unit tests of the configuration reader: every problem collected with its
//! place, "did you mean" suggestions, units and the JSON conversion.

use std::time::Duration;

use super::*;

#[test]
fn every_problem_is_collected_with_its_place() {
    let node = config_map(&[
        ("max_attempts", "three"),
        ("timout", "5s"),
        ("initial_backoff", "100"),
    ]);
    let errors = ConfigErrors::default();
    {
        let mut reader = ConfigReader::new(&node, "retry", &errors);
        assert_eq!(reader.u64("max_attempts"), None);
        assert_eq!(reader.duration("timeout"), None);
        assert_eq!(reader.duration("initial_backoff"), None);
    }
    let errors = errors.into_inner();
    let lines: Vec<(u32, &str)> = errors
        .iter()
        .map(|e| (e.span.line, e.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![
            (
                2,
                "`max_attempts` must be a whole number (0 or more), found `three`"
            ),
            (4, "`initial_backoff` must be a duration, found `100`"),
            (3, "unknown key `timout` in `retry`"),
        ]
    );
    assert_eq!(errors[2].hint.as_deref(), Some("did you mean `timeout`?"));
}

#[test]
fn one_of_suggests_the_closest_choice() {
    let node = config_map(&[("ordering", "partiton")]);
    let errors = ConfigErrors::default();
    {
        let mut reader = ConfigReader::new(&node, "", &errors);
        assert_eq!(
            reader.one_of("ordering", &["partition", "key", "none"]),
            None
        );
    }
    let errors = errors.into_inner();
    assert_eq!(errors[0].message, "unknown ordering `partiton`");
    assert_eq!(
        errors[0].hint.as_deref(),
        Some("did you mean `partition`? (one of `partition`, `key` or `none`)")
    );
}

#[test]
fn durations_and_sizes_parse_with_units() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("10").is_err());
    assert!(parse_duration("10 parsecs").is_err());
    assert_eq!(parse_byte_size("64KiB"), Ok(65_536));
    assert_eq!(parse_byte_size("1MB"), Ok(1_000_000));
    assert_eq!(parse_byte_size("4096"), Ok(4096));
    assert!(parse_byte_size("lots").is_err());
}

#[test]
fn json_conversion_keeps_plain_scalar_types() {
    let node = config_map(&[("a", "12"), ("b", "x\"y")]);
    assert_eq!(node.to_json_text(), r#"{"a":12,"b":"x\"y"}"#);
}
