//! HTTP/1.1 on the API unix socket, one [`Controller`] behind it. Requests
//! are handled one at a time, as Firecracker does.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::sync::Mutex;

use crate::controller::{ApiRequest, Controller};

/// Largest request body accepted (Firecracker's default is 51200 bytes).
pub const MAX_BODY: usize = 51_200;

/// Accepts connections until the task is dropped.
pub async fn serve(listener: UnixListener, controller: Arc<Mutex<Controller>>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "api accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let controller = controller.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(request, controller.clone()));
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "api connection ended");
            }
        });
    }
}

async fn respond(
    request: Request<Incoming>,
    controller: Arc<Mutex<Controller>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some(format!(
                    r#"{{"fault_message":"Request payload with size larger than the limit of {MAX_BODY} bytes."}}"#
                )),
            ));
        }
    };
    let api_request = ApiRequest {
        method: parts.method,
        path,
        body: (!body.is_empty()).then_some(body),
    };
    let answer = controller.lock().await.handle(api_request).await;
    Ok(reply(answer.status, answer.body))
}

fn reply(status: StatusCode, body: Option<String>) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(status)
        .header(header::SERVER, "Firecracker API");
    if body.is_some() {
        response = response.header(header::CONTENT_TYPE, "application/json");
    }
    response
        .body(Full::new(body.map(Bytes::from).unwrap_or_default()))
        .expect("status and headers are valid")
}
