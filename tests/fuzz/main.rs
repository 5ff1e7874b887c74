//! The fuzz harness (stable Rust, no extra tools): each target gets
//! `SPATE_FUZZ_SECONDS` (default 10) of mutated inputs, and every saved
//! finding under `tests/fuzz/regressions/<target>/` is replayed. Targets:
//! the pipeline loader, the file envelope reader, the Avro decoder, the
//! schema-registry wire decoder (against a registry served here that knows
//! one schema), the expression compiler, and expression evaluation (inline
//! when proven bounded, else in the sandbox). See `tests/fuzz/harness.rs`
//! for seeds, replay and findings.

mod harness;
mod mutate;
mod targets;

use std::time::Duration;

use harness::{fuzz, replay_regressions, run_quietly, Target, STACK_BYTES};

/// Runs `f` on a thread with the harness's large stack.
fn on_big_stack(f: impl FnOnce() + Send + 'static) {
    let thread = std::thread::Builder::new().stack_size(STACK_BYTES).spawn(f);
    match thread.map(|t| t.join()) {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(error) => panic!("cannot start a thread: {error}"),
    }
}

/// One test per target: `name => target` fuzzes `targets::target()`.
macro_rules! fuzz_tests {
    ($($name:ident => $target:ident,)+) => {
        $(
            #[test]
            fn $name() {
                fuzz(targets::$target());
            }
        )+
    };
}

fuzz_tests! {
    fuzzed_pipeline_files_never_crash_and_every_error_is_located => loader,
    fuzzed_envelope_lines_never_crash_and_round_trip => envelope,
    fuzzed_avro_payloads_never_crash_and_are_never_retried => avro,
    fuzzed_registry_frames_never_crash_and_bad_ones_are_never_retried => registry,
    fuzzed_expressions_never_crash_the_compiler => expr,
    fuzzed_expressions_and_payloads_never_crash_or_hang_an_evaluation => expr_eval,
}

#[test]
fn every_saved_finding_still_passes() {
    on_big_stack(|| {
        for target in &targets::all() {
            let count = replay_regressions(target);
            println!("{}: {count} regressions replayed", target.name);
        }
    });
}

fn fails_on_a_bang(data: &[u8]) {
    assert!(!data.contains(&b'!'), "a bang");
}

fn hangs_on_a_bang(data: &[u8]) {
    while data.contains(&b'!') {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn toy(run: fn(&[u8])) -> Target {
    Target {
        name: "toy",
        corpus: vec![b"abc".to_vec()],
        run,
        yaml: false,
        max_len: 64,
    }
}

#[test]
fn the_harness_reports_a_panicking_input_as_a_finding() {
    // Its ten expected panics would print ten messages and backtraces.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = run_quietly(
        toy(fails_on_a_bang),
        1,
        Duration::from_secs(2),
        Duration::from_secs(10),
    );
    std::panic::set_hook(hook);
    assert!(outcome.inputs > 0);
    assert!(
        outcome.findings.iter().any(|f| f.contains("panicked")),
        "{:?}",
        outcome.findings
    );
}

#[test]
fn the_harness_reports_an_input_that_never_ends_as_a_hang() {
    let outcome = run_quietly(
        toy(hangs_on_a_bang),
        1,
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    assert_eq!(outcome.findings.len(), 1, "{:?}", outcome.findings);
    assert!(
        outcome.findings[0].contains("a hang"),
        "{}",
        outcome.findings[0]
    );
}
