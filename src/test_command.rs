//! `spate test`: runs a function over recorded events with no broker and
//! prints what each event came to; with expectations (a pipeline file's
//! `tests:` block, or `--expect`), checks them and fails on a mismatch.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use spate::pipeline::{self, PipelineSpec};
use spate::runtime::Runtime;
use spate::testing::{
    compare, expectation, render_outcome, sample_event, Expectation, OfflineFunction,
};
use spate::Event;

/// What `spate test` was asked.
pub struct TestArgs {
    /// Pipeline files.
    pub files: Vec<PathBuf>,
    /// `--input`: recorded events, JSON Lines.
    pub input: Option<PathBuf>,
    /// `--function`: which function runs them.
    pub function: Option<String>,
    /// `--expect`: expected outcomes, JSON Lines, one per input line.
    pub expect: Option<PathBuf>,
}

/// Reads a JSON Lines file: (line number, value) for each non-blank line.
fn read_json_lines(path: &Path) -> anyhow::Result<Vec<(usize, serde_json::Value)>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("{}: cannot open the file", path.display()))?;
    let mut values = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}: cannot read the file", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(&line).with_context(|| {
            format!(
                "{}:{}: not a JSON value (each line is one JSON value)",
                path.display(),
                index + 1
            )
        })?;
        values.push((index + 1, value));
    }
    Ok(values)
}

/// One event to run, with where it came from and what it should become.
struct Case {
    place: String,
    event: Event,
    expect: Option<Expectation>,
}

/// Runs the cases through one function; prints each; returns the number
/// of mismatches.
async fn run_cases(function: &OfflineFunction, cases: Vec<Case>) -> usize {
    let mut stdout = std::io::stdout().lock();
    let mut failures = 0;
    for case in cases {
        let outcome = function.run(case.event).await;
        match &case.expect {
            None => {
                let _ = write!(stdout, "{}\n{}", case.place, render_outcome(&outcome, "  "));
            }
            Some(expected) => match compare(expected, &outcome) {
                Ok(()) => {
                    let _ = write!(
                        stdout,
                        "ok   {}\n{}",
                        case.place,
                        render_outcome(&outcome, "       ")
                    );
                }
                Err(diff) => {
                    failures += 1;
                    let _ = write!(stdout, "FAIL {}\n{diff}", case.place);
                }
            },
        }
    }
    failures
}

fn pick_function<'s>(
    spec: &'s PipelineSpec,
    wanted: Option<&str>,
) -> anyhow::Result<&'s spate::pipeline::FunctionSpec> {
    let names: Vec<&str> = spec.functions.iter().map(|f| f.name.as_str()).collect();
    match wanted {
        Some(name) => spec
            .functions
            .iter()
            .find(|f| f.name == name)
            .with_context(|| {
                format!(
                    "{}: no function `{name}` (functions: {})",
                    spec.path.display(),
                    names.join(", ")
                )
            }),
        None if spec.functions.len() == 1 => Ok(&spec.functions[0]),
        None => bail!(
            "{}: several functions; say which with --function (one of {})",
            spec.path.display(),
            names.join(", ")
        ),
    }
}

/// `--input` mode: one file, one function, recorded events from a file.
async fn run_input(spec: &PipelineSpec, args: &TestArgs, input: &Path) -> anyhow::Result<usize> {
    let function = pick_function(spec, args.function.as_deref())?;
    let samples = read_json_lines(input)?;
    let expectations = match &args.expect {
        Some(path) => {
            let values = read_json_lines(path)?;
            if values.len() != samples.len() {
                bail!(
                    "{}: {} expectations for {} input events in {}; give one line per input line",
                    path.display(),
                    values.len(),
                    samples.len(),
                    input.display()
                );
            }
            values
                .into_iter()
                .map(|(line, value)| {
                    expectation(&value)
                        .map(Some)
                        .map_err(|e| anyhow::anyhow!("{}:{line}: {e}", path.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        }
        None => vec![None; samples.len()],
    };
    let mut cases = Vec::with_capacity(samples.len());
    for ((line, value), expect) in samples.into_iter().zip(expectations) {
        let event = sample_event(&value, line as u64)
            .map_err(|e| anyhow::anyhow!("{}:{line}: {e}", input.display()))?;
        cases.push(Case {
            place: format!("{}:{line}", input.display()),
            event,
            expect,
        });
    }
    println!("{} · function {}", spec.path.display(), function.name);
    Ok(run_cases(&OfflineFunction::from_spec(function), cases).await)
}

/// `tests:` mode: every test of the file.
async fn run_tests_block(spec: &PipelineSpec) -> anyhow::Result<usize> {
    let mut failures = 0;
    for test in &spec.tests {
        let function = pick_function(spec, Some(&test.function))?;
        println!(
            "{}:{}: {} · function {}",
            spec.path.display(),
            test.span.line,
            test.name,
            function.name
        );
        let cases = test
            .events
            .iter()
            .map(|e| Case {
                place: format!("{}:{}", spec.path.display(), e.span.line),
                event: e.event.clone(),
                expect: e.expect.clone(),
            })
            .collect();
        let offline = OfflineFunction::from_spec(function);
        offline.start_fresh(test.events.iter().map(|e| e.event.position.partition));
        failures += run_cases(&offline, cases).await;
    }
    Ok(failures)
}

/// Runs `spate test`; exit 1 on a mismatch, an invalid file, or nothing to
/// run.
pub async fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new();
    if args.input.is_some() && args.files.len() != 1 {
        bail!("--input runs one pipeline file; {} given", args.files.len());
    }
    if args.input.is_none() && (args.expect.is_some() || args.function.is_some()) {
        bail!("--expect and --function go with --input; without it the files' `tests:` blocks run");
    }
    let mut failures = 0;
    let mut ran = 0;
    for file in &args.files {
        let spec = match pipeline::load_file(file, runtime.registry()) {
            Ok(spec) => spec,
            Err(error) => {
                eprint!("{}", pipeline::render_load_error(&error));
                return Ok(ExitCode::FAILURE);
            }
        };
        if let Some(input) = &args.input {
            failures += run_input(&spec, &args, input).await?;
            ran += 1;
        } else if spec.tests.is_empty() {
            println!("{}: no `tests:` block", file.display());
        } else {
            failures += run_tests_block(&spec).await?;
            ran += spec.tests.len();
        }
    }
    if ran == 0 {
        bail!("nothing to test: give --input, or add a `tests:` block to the pipeline file");
    }
    if failures > 0 {
        println!("{failures} event(s) did not come out as expected");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
