//! A TCP proxy in front of PostgreSQL that can break a connection exactly
//! at `COMMIT`: either after the server answered it (the commit landed, the
//! client never learns) or before the server saw it (it never lands). This
//! is how the tests produce a `COMMIT` whose answer was lost, which a real
//! network does only by chance.
//!
//! tokio-postgres sends `COMMIT` as a simple query, so the proxy looks for
//! that one message (`Q`, length 11, `COMMIT\0`) in what the client sends.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Where to break the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Forward `COMMIT`, swallow the server's answer, close.
    AfterCommit,
    /// Swallow `COMMIT` itself, close (the server rolls back).
    BeforeCommit,
}

/// Runs (blocking) once the cut is made, before the client side closes:
/// e.g. stops the server, so the client cannot find out at once.
pub type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    armed: Option<(Cut, Option<Hook>)>,
    fired: u32,
}

/// The proxy; it runs until the test ends.
pub struct Proxy {
    /// `127.0.0.1:port` to connect to instead of the server.
    pub addr: String,
    state: Arc<Mutex<State>>,
}

const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

impl Proxy {
    /// Listens on a free port and forwards every connection to `upstream`.
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let upstream = upstream.to_owned();
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream.clone(), shared.clone()));
            }
        });
        Proxy { addr, state }
    }

    /// `postgres://postgres@proxy/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@{}/postgres", self.addr)
    }

    /// Breaks the next `COMMIT` that passes (on any connection).
    pub fn arm(&self, cut: Cut, hook: Option<Hook>) {
        self.state.lock().unwrap().armed = Some((cut, hook));
    }

    /// How many cuts were made.
    pub fn fired(&self) -> u32 {
        self.state.lock().unwrap().fired
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn run_hook(hook: Option<Hook>) {
    if let Some(hook) = hook {
        tokio::task::spawn_blocking(hook).await.expect("hook runs");
    }
}

async fn serve(mut client: TcpStream, upstream: String, state: Arc<Mutex<State>>) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return; // the client sees the connection close
    };
    let mut from_client = vec![0u8; 64 * 1024];
    let mut from_server = vec![0u8; 64 * 1024];
    // Set once COMMIT went through with `Cut::AfterCommit`.
    let mut swallow: Option<Option<Hook>> = None;
    loop {
        tokio::select! {
            read = client.read(&mut from_client) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                let chunk = &from_client[..n];
                let cut = if find(chunk, COMMIT) {
                    let mut state = state.lock().unwrap();
                    let armed = state.armed.take();
                    if armed.is_some() {
                        state.fired += 1;
                    }
                    armed
                } else {
                    None
                };
                match cut {
                    Some((Cut::BeforeCommit, hook)) => {
                        drop(server);
                        run_hook(hook).await;
                        return;
                    }
                    Some((Cut::AfterCommit, hook)) => swallow = Some(hook),
                    None => {}
                }
                if server.write_all(chunk).await.is_err() {
                    return;
                }
            }
            read = server.read(&mut from_server) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                if let Some(hook) = swallow.take() {
                    drop(server);
                    run_hook(hook).await;
                    return;
                }
                if client.write_all(&from_server[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
