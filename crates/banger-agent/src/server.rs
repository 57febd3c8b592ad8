//! The agent's HTTP routes.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use banger_guest::agent::{HEALTHZ_ROUTE, Health, PORTS_ROUTE};

use crate::ports::read_listeners;

/// The agent's version, reported by `/healthz`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug)]
struct AgentState {
    proc_root: PathBuf,
}

/// The routes, reading sockets and processes from `/proc`.
pub fn router() -> Router {
    router_with_proc_root(PathBuf::from("/proc"))
}

/// The routes, reading sockets and processes under `proc_root` (tests).
/// Unknown paths answer 404.
pub fn router_with_proc_root(proc_root: PathBuf) -> Router {
    Router::new()
        .route(HEALTHZ_ROUTE, get(healthz))
        .route(PORTS_ROUTE, get(ports))
        .with_state(Arc::new(AgentState { proc_root }))
}

async fn healthz() -> axum::Json<Health> {
    axum::Json(Health::ok(AGENT_VERSION))
}

async fn ports(State(state): State<Arc<AgentState>>) -> Response {
    let proc_root = state.proc_root.clone();
    match tokio::task::spawn_blocking(move || read_listeners(&proc_root)).await {
        Ok(Ok(listeners)) => axum::Json(listeners).into_response(),
        Ok(Err(e)) => {
            let message = error_chain(&e);
            eprintln!("banger-vsock-agent: /ports: {message}");
            (StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading listeners panicked: {e}"),
        )
            .into_response(),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
