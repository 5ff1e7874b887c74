//! The sandbox against the payload-driven failures it exists for: each
//! ends one evaluation with the right error, the next evaluation works,
//! and no child is left a zombie.

use std::time::{Duration, Instant};

use super::super::{EvalError, Expr, Limits, Mode, Outcome};

/// The sandbox is process-wide: these tests take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const RECURSION: &str = "def f: if . <= 0 then 0 else (. - 1 | f) + 1 end; .n | f";

fn limits(time_ms: u64, memory_mib: u64) -> Limits {
    Limits {
        time: Duration::from_millis(time_ms),
        memory: memory_mib << 20,
    }
}

fn expr(source: &str) -> Expr {
    Expr::compile(source).unwrap_or_else(|e| panic!("{source:?}: {e:?}"))
}

/// Our children that are zombies (exited, not reaped).
fn zombies() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, after)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
            if let Ok(pid) = entry.file_name().to_string_lossy().parse() {
                found.push(pid);
            }
        }
    }
    found
}

async fn good_evaluation_works() {
    let sum = expr("[.[] | . * 2] | add");
    assert!(!sum.is_inline());
    assert_eq!(
        sum.evaluate(b"[1, 2, 3]", Mode::Results, &Limits::default())
            .await,
        Ok(Outcome::Results(vec![b"12".to_vec()]))
    );
    assert_eq!(zombies(), Vec::<i32>::new(), "zombie children");
}

#[tokio::test]
async fn deep_recursion_is_a_resource_limit_and_the_next_evaluation_works() {
    let _turn = SERIAL.lock().await;
    let result = expr(RECURSION)
        .evaluate(br#"{"n": 10000000}"#, Mode::Results, &limits(20_000, 256))
        .await;
    match result {
        Err(EvalError::ResourceLimit(words)) => {
            assert_eq!(
                words,
                "the evaluation overflowed its stack (recursion too deep)"
            )
        }
        other => panic!("{other:?}"),
    }
    good_evaluation_works().await;
}

#[tokio::test]
async fn a_huge_allocation_is_a_resource_limit_and_the_next_evaluation_works() {
    let _turn = SERIAL.lock().await;
    for source in [r#""x" * .n"#, "[range(.n)] | length"] {
        let result = expr(source)
            .evaluate(br#"{"n": 10000000000}"#, Mode::Results, &limits(20_000, 64))
            .await;
        assert_eq!(
            result,
            Err(EvalError::ResourceLimit(
                "the evaluation ran out of memory (limit 64 MiB)".to_owned()
            )),
            "{source}"
        );
        good_evaluation_works().await;
    }
}

#[tokio::test]
async fn an_endless_loop_times_out_within_its_limit_and_the_next_evaluation_works() {
    let _turn = SERIAL.lock().await;
    for source in ["last(range(1e18))", "repeat(.) | empty", "def f: f; f"] {
        let started = Instant::now();
        let result = expr(source)
            .evaluate(b"1", Mode::Holds, &limits(300, 64))
            .await;
        assert_eq!(result, Err(EvalError::Timeout(Duration::from_millis(300))));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{source} took {:?}",
            started.elapsed()
        );
        good_evaluation_works().await;
    }
}

#[tokio::test]
async fn an_abandoned_evaluation_is_killed_so_the_pool_serves_others() {
    let _turn = SERIAL.lock().await;
    let endless = expr("last(range(1e18))");
    let slow = limits(60_000, 64);
    // More abandoned loops than pool threads: each thread must notice its
    // caller gave up and kill its child, or the good evaluation would wait
    // a minute behind them.
    for _ in 0..super::POOL_SIZE + 1 {
        let attempt = endless.evaluate(b"1", Mode::Holds, &slow);
        assert!(tokio::time::timeout(Duration::from_millis(100), attempt)
            .await
            .is_err());
    }
    let started = Instant::now();
    good_evaluation_works().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn variables_reach_the_sandboxed_expression() {
    let _turn = SERIAL.lock().await;
    let vars = vec![
        ("dev".to_owned(), "\"a\\\" or true or \\\"\"".to_owned()),
        ("n".to_owned(), "\"2\"".to_owned()),
    ];
    // A value that would turn spliced code into `true` is just a string.
    let e = Expr::compile_with_vars(
        "[.[] | select(.d == $dev)] | length + ($n | tonumber)",
        &vars,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        e.evaluate_sandboxed(
            br#"[{"d": "a"}, {"d": "a\" or true or \""}]"#,
            Mode::Results,
            &Limits::default()
        )
        .await,
        Ok(Outcome::Results(vec![b"3".to_vec()]))
    );
}
