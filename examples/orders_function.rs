//! An HTTP function as `pipelines/orders-http-function.yaml` calls it: the
//! shape of an OpenFaaS / Knative / Lambda-function-URL handler, written
//! with axum. CI starts it to run that pipeline's `tests:` block.
//!
//! `POST /orders` takes an order `{"order": N, "amount": X}` and answers
//! the scored order `{"order": N, "amount": X, "score": "low" | "high"}`;
//! an order of 1,000 or more is also answered with a review request, so the
//! answer is a JSON array of two outputs. A negative amount is refused with
//! 422 (spate dead-letters it at once); a body that is not an order with 400.
//!
//! Run: `cargo run --example orders_function -- 127.0.0.1:8080`

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

async fn score(body: axum::body::Bytes) -> (StatusCode, Json<Value>) {
    let order: Value = match serde_json::from_slice(&body) {
        Ok(order) => order,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("not JSON: {e}")})),
            )
        }
    };
    let (Some(id), Some(amount)) = (order["order"].as_u64(), order["amount"].as_f64()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "an order is {\"order\": N, \"amount\": X}"})),
        );
    };
    if amount < 0.0 {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "amount must not be negative"})),
        );
    }
    let scored = json!({
        "order": id,
        "amount": amount,
        "score": if amount >= 100.0 { "high" } else { "low" },
    });
    if amount >= 1000.0 {
        return (
            StatusCode::OK,
            Json(json!([scored, {"review": id, "reason": "amount of 1000 or more"}])),
        );
    }
    (StatusCode::OK, Json(scored))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    eprintln!("orders function listening on http://{address}/orders");
    axum::serve(listener, Router::new().route("/orders", post(score))).await
}
