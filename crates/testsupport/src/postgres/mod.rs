//! Helpers of the PostgreSQL connector's integration tests and of the IoT
//! end-to-end tests: a real PostgreSQL (the one on `127.0.0.1:5432`, user
//! `postgres`, trust auth, or a temporary cluster started for the test), a
//! schema per test, and hand-built configuration trees whose entries sit at
//! known lines and columns.
//!
//! If nothing answers on `PG_TEST_ADDR` (default `127.0.0.1:5432`), or
//! `SPATE_PG_OWN_CLUSTER=1` is set, each test runs `initdb` into a temporary
//! directory and `pg_ctl start`s it on a free port (binaries from
//! `PG_BIN`, else `/usr/lib/postgresql/*/bin`; as root they run as the
//! `postgres` user through `runuser`).
//!
//! Guarantees: a cluster of the test's own is stopped when the [`Server`]
//! guard drops; tests that stop and start the server always use
//! [`start_own`], so the shared server is never stopped.

pub mod eos;
pub mod fixtures;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use spate_connector::config::ConfigErrors;
use spate_connector::{ConfigError, ConfigNode, ConfigReader, NodeKind, Span};
use spate_postgres::SinkConfig;

use crate::process::{answers, free_port, wait_until_answering};

/// A running PostgreSQL: ours (stopped on drop) or the shared one.
pub struct Server {
    /// Host and port.
    pub addr: String,
    own: Option<Own>,
}

struct Own {
    ctl: Arc<Control>,
    /// Removed when the server is dropped (after it stopped).
    _data: tempfile::TempDir,
}

/// Stops and starts a cluster of our own; shareable with a task that stops
/// the server at a chosen moment.
pub struct Control {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn pg_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("PG_BIN") {
        return PathBuf::from(bin);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (Debian package `postgresql`), or set PG_BIN")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Control {
    fn run(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{} runs: {e}", program.display()))
    }

    /// [`Control::run`], failing the test (with the tool's output) unless
    /// the tool succeeds.
    fn run_ok(&self, tool: &str, args: &[&str]) {
        let out = self.run(tool, args);
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the cluster and waits until it accepts connections.
    pub fn start(&self) {
        let dir = self.dir().to_str().unwrap().to_owned();
        let options = format!(
            "-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let log = format!("{dir}/server.log");
        self.run_ok(
            "pg_ctl",
            &[
                "-D",
                &format!("{dir}/data"),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
        let addr = format!("127.0.0.1:{}", self.port);
        assert!(
            wait_until_answering(&addr, Duration::from_secs(20), || false),
            "PostgreSQL did not come up on {addr}"
        );
    }

    /// Stops the cluster (`pg_ctl stop -m fast`: open transactions are
    /// rolled back, connections closed).
    pub fn stop(&self) {
        let dir = self.dir().to_str().unwrap().to_owned();
        let _ = self.run(
            "pg_ctl",
            &["-D", &format!("{dir}/data"), "-m", "fast", "-w", "stop"],
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(own) = &self.own {
            own.ctl.stop();
        }
    }
}

/// The shared server if one answers (and no own cluster is asked for), else
/// a temporary cluster of our own.
pub fn server() -> Server {
    let addr = std::env::var("PG_TEST_ADDR").unwrap_or_else(|_| "127.0.0.1:5432".to_owned());
    let own_wanted = std::env::var("SPATE_PG_OWN_CLUSTER").is_ok_and(|v| v == "1");
    if !own_wanted && answers(&addr) {
        return Server { addr, own: None };
    }
    start_own()
}

/// Starts a temporary cluster on a free port.
pub fn start_own() -> Server {
    let bin = pg_bin();
    let data = tempfile::tempdir().expect("temp dir");
    let as_postgres = is_root();
    if as_postgres {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(data.path())
            .status()
            .expect("chown runs");
        assert!(status.success(), "chown of the cluster directory failed");
    }
    let port = free_port();
    let own = Own {
        ctl: Arc::new(Control {
            bin,
            dir: data.path().to_owned(),
            port,
            as_postgres,
        }),
        _data: data,
    };
    let datadir = format!("{}/data", own.ctl.dir().display());
    own.ctl.run_ok(
        "initdb",
        &[
            "-D",
            &datadir,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
    );
    own.ctl.start();
    Server {
        addr: format!("127.0.0.1:{port}"),
        own: Some(own),
    }
}

impl Server {
    /// `postgres://postgres@host:port/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@{}/postgres", self.addr)
    }

    /// The control of a cluster this test started ([`start_own`]); panics
    /// for the shared server, which tests never stop.
    pub fn control(&self) -> Arc<Control> {
        match &self.own {
            Some(own) => own.ctl.clone(),
            None => panic!("only a cluster of the test's own (start_own) may be stopped"),
        }
    }

    /// Stops our own cluster (see [`Server::control`]).
    pub fn stop(&self) {
        self.control().stop();
    }

    /// Starts our own cluster again after [`Server::stop`].
    pub fn start(&self) {
        self.control().start();
    }

    /// A plain client for setting up and checking.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("test client connects");
        tokio::spawn(conn);
        client
    }
}

/// A fresh schema for one test, dropped (with its tables) on
/// [`Schema::drop_now`].
pub struct Schema {
    /// Its name.
    pub name: String,
}

impl Schema {
    /// Creates a schema with a unique name.
    pub async fn create(client: &tokio_postgres::Client, prefix: &str) -> Self {
        let name = unique(prefix);
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("schema created");
        Self { name }
    }

    /// Drops the schema and everything in it.
    pub async fn drop_now(&self, client: &tokio_postgres::Client) {
        let _ = client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await;
    }
}

pub use crate::names::unique;

fn scalar(text: &str, line: u32, column: u32) -> ConfigNode {
    ConfigNode {
        kind: NodeKind::Scalar {
            text: text.to_owned(),
            quoted: false,
        },
        span: Span { line, column },
    }
}

/// Map entries `key: value` on consecutive lines from `first_line`, keys at
/// `key_column` and values at `value_column`.
fn entries_at(
    pairs: &[(&str, &str)],
    first_line: u32,
    key_column: u32,
    value_column: u32,
) -> Vec<(String, Span, ConfigNode)> {
    (first_line..)
        .zip(pairs)
        .map(|(line, (key, value))| {
            let key_span = Span {
                line,
                column: key_column,
            };
            (
                (*key).to_owned(),
                key_span,
                scalar(value, line, value_column),
            )
        })
        .collect()
}

/// A sink configuration as a pipeline file would give it: top-level entries
/// on lines 2, 3, …; `columns:` on line 10 with its entries on lines 11, 12, …
/// at column 9 (values at column 22); `key:` on line 30 with its items at
/// column 12, 24, …
pub fn sink_node(entries: &[(&str, &str)], columns: &[(&str, &str)], key: &[&str]) -> ConfigNode {
    let mut map = entries_at(entries, 2, 7, 12);
    if !columns.is_empty() {
        let items = entries_at(columns, 11, 9, 22);
        map.push((
            "columns".to_owned(),
            Span {
                line: 10,
                column: 7,
            },
            ConfigNode {
                kind: NodeKind::Map(items),
                span: Span {
                    line: 11,
                    column: 9,
                },
            },
        ));
    }
    if !key.is_empty() {
        let items = key
            .iter()
            .enumerate()
            .map(|(i, k)| scalar(k, 30, 12 + 12 * i as u32))
            .collect();
        map.push((
            "key".to_owned(),
            Span {
                line: 30,
                column: 7,
            },
            ConfigNode {
                kind: NodeKind::Seq(items),
                span: Span {
                    line: 30,
                    column: 11,
                },
            },
        ));
    }
    ConfigNode {
        kind: NodeKind::Map(map),
        span: Span { line: 2, column: 7 },
    }
}

/// Reads a sink configuration; the config (if valid) and every problem.
pub fn read_config(node: &ConfigNode) -> (Option<SinkConfig>, Vec<ConfigError>) {
    let errors = ConfigErrors::default();
    let config = {
        let mut reader = ConfigReader::new(node, "functions[0].outputs[0]", &errors);
        SinkConfig::read(&mut reader)
    };
    (config, errors.into_inner())
}

/// A configuration that must be valid.
pub fn config(node: &ConfigNode) -> SinkConfig {
    let (config, errors) = read_config(node);
    assert!(errors.is_empty(), "unexpected config errors: {errors:?}");
    config.expect("a config")
}
