//! Request deadlines: no request holds a task, a database connection or an outbound call
//! longer than `KEYWARD_REQUEST_TIMEOUT_SECONDS`.
//!
//! One deadline covers the whole request inside Keyward: reading the body, the session,
//! database work and outbound calls. When it passes, the handler's future is dropped (which
//! cancels a stuck query: sqlx closes that connection) and the surface's error renderer turns
//! [`AppError::TimedOut`] into a page or JSON. The answer says whose side was slow: 408 when
//! the client had not finished sending its body (RFC 9110 §15.5.9), else 503 with
//! `Retry-After`.
//!
//! Not covered here: a client that never finishes its *headers* holds only its connection
//! (hyper reads headers before any handler runs); the reverse proxy in front bounds that
//! (nginx `client_header_timeout`, see README "Failure behaviour").

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use axum::{
    body::{Body, BodyDataStream, Bytes, HttpBody},
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures_util::Stream;

use crate::{error::AppError, state::AppState};

/// Runs the request under the configured deadline. Layer it inside the surface's error
/// renderer (`html_errors` / `json_errors`) so that the timeout is rendered like any error.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let received = Arc::new(AtomicBool::new(body.is_end_stream()));
    let body = if received.load(Ordering::Relaxed) {
        body
    } else {
        Body::from_stream(Tracked {
            inner: body.into_data_stream(),
            received: received.clone(),
        })
    };
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let req = Request::from_parts(parts, body);
    match tokio::time::timeout(state.config.request_timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            let slow_client = !received.load(Ordering::Relaxed);
            tracing::warn!(
                event = "request_timed_out",
                %method,
                path = uri.path(),
                slow_client,
                limit_seconds = state.config.request_timeout.as_secs(),
                "request exceeded its deadline"
            );
            AppError::TimedOut { slow_client }.into_response()
        }
    }
}

/// A request body that records when it has been read to the end.
struct Tracked {
    inner: BodyDataStream,
    received: Arc<AtomicBool>,
}

impl Stream for Tracked {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(None) = next {
            self.received.store(true, Ordering::Relaxed);
        }
        next
    }
}
