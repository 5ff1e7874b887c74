//! A test HTTP server (feature `http`): an axum router served on a free
//! port of 127.0.0.1 by a task of the calling runtime.
//!
//! Guarantees: the returned address is bound before it is returned, so a
//! request sent to it right away is answered; the server runs until that
//! runtime shuts down.

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a test server binds 127.0.0.1:0");
    let address = listener.local_addr().expect("the test server's address");
    (listener, address)
}

/// Serves `app` on a free port; its address.
pub async fn serve(app: Router) -> SocketAddr {
    let (listener, address) = listener().await;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    address
}

/// Serves `app` as [`serve`] does, giving its handlers each request's peer
/// address (`ConnectInfo<SocketAddr>`).
pub async fn serve_with_peers(app: Router) -> SocketAddr {
    let (listener, address) = listener().await;
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        let _ = axum::serve(listener, service).await;
    });
    address
}
