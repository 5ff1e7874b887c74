//! The machine and tool versions a comparison ran on, read at run time
//! (`/proc`, `uname`, the tools' own version output), never typed in.
//!
//! Guarantees: every line says where it came from when it could not be
//! read ("unknown: …"), so the description never claims what it did not
//! see.

use std::process::Command;

fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        }
        Err(e) => format!("unknown: {program}: {e}"),
    }
}

fn proc_field(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| format!("unknown: no {key} in {file}"))
}

/// The description as Markdown list items.
pub fn describe(nats_server: &str, tansu: &str, python: Option<&std::path::Path>) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: f64 = proc_field("/proc/meminfo", "MemTotal")
        .trim_end_matches(" kB")
        .parse()
        .unwrap_or(f64::NAN);
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    let mut lines = vec![
        format!("CPU: {}", proc_field("/proc/cpuinfo", "model name")),
        format!("cores available: {cores}"),
        format!("RAM: {:.1} GiB", mem_kib / 1024.0 / 1024.0),
        format!("kernel: {}", first_line("uname", &["-sr"])),
        format!("nats-server: {nats_server}"),
        format!("Kafka broker: Tansu {tansu} (in-memory storage)"),
        format!("librdkafka (spate and the raw loop): {librdkafka}"),
        format!("rustc: {}", first_line("rustc", &["-V"])),
        format!(
            "spate: {} (commit {})",
            env!("CARGO_PKG_VERSION"),
            first_line(
                "git",
                &[
                    "-C",
                    env!("CARGO_MANIFEST_DIR"),
                    "rev-parse",
                    "--short",
                    "HEAD"
                ]
            )
        ),
    ];
    if let Some(python) = python {
        let script = "import sys, quixstreams, bytewax, confluent_kafka; \
            from importlib.metadata import version; \
            print(f'Python {sys.version.split()[0]}, quixstreams {quixstreams.__version__}, \
            bytewax {version(\"bytewax\")}, confluent-kafka {confluent_kafka.version()[0]} \
            (librdkafka {confluent_kafka.libversion()[0]})')";
        lines.push(format!(
            "peers: {}",
            first_line(&python.display().to_string(), &["-c", script])
        ));
    }
    lines.iter().map(|l| format!("- {l}\n")).collect()
}
