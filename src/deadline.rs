//! Request deadlines: no request holds a task, a database connection or an outbound call
//! longer than `KEYWARD_REQUEST_TIMEOUT_SECONDS`.
//!
//! One deadline covers the whole request inside Keyward: reading the body, the session,
//! database work and outbound calls. When it passes, the handler's future is dropped (which
//! cancels a stuck query: sqlx closes that connection) and the surface's error renderer turns
//! [`AppError::TimedOut`] into a page or JSON. The answer says whose side was slow: 408 when
//! Keyward was waiting for the rest of the client's body (RFC 9110 §15.5.9), else 503 with
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
    body::{Body, Bytes, HttpBody},
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body::{Frame, SizeHint};

use crate::{error::AppError, state::AppState};

/// Runs the request under the configured deadline. Layer it inside the surface's error
/// renderer (`html_errors` / `json_errors`) so that the timeout is rendered like any error.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (req, waiting) = tracked(req);
    let (method, uri) = (req.method().clone(), req.uri().clone());
    match tokio::time::timeout(state.config.request_timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => timed_out(&state, &method, &uri, &waiting),
    }
}

/// The request with its body watched (no wrapping when it has none), and the flag that
/// tells whether the request is waiting for more of the client's body.
fn tracked(req: Request) -> (Request, Option<Arc<AtomicBool>>) {
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        return (Request::from_parts(parts, body), None);
    }
    let waiting = Arc::new(AtomicBool::new(false));
    let body = Body::new(Tracked {
        inner: body,
        waiting: waiting.clone(),
    });
    (Request::from_parts(parts, body), Some(waiting))
}

/// The answer when the deadline passed: 408 when Keyward was waiting for the rest of the
/// client's body, else 503 (Keyward's own work was slow, whether or not it had read the
/// body yet).
fn timed_out(
    state: &AppState,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    waiting: &Option<Arc<AtomicBool>>,
) -> Response {
    let slow_client = waiting.as_ref().is_some_and(|w| w.load(Ordering::Relaxed));
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

/// The deadline and the JSON error rendering of the verification routes as one tower layer:
/// what `guard` and `json_errors` do, without their per-request boxing (every `from_fn`
/// clones the route's boxed service and boxes its future; these routes are the hot path).
#[derive(Clone)]
pub struct JsonDeadlineLayer(pub AppState);

impl<S> tower::Layer<S> for JsonDeadlineLayer {
    type Service = JsonDeadline<S>;
    fn layer(&self, inner: S) -> JsonDeadline<S> {
        JsonDeadline {
            inner,
            state: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct JsonDeadline<S> {
    inner: S,
    state: AppState,
}

impl<S> tower::Service<Request> for JsonDeadline<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = JsonDeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (req, waiting) = tracked(req);
        let (method, uri) = (req.method().clone(), req.uri().clone());
        JsonDeadlineFuture {
            inner: tokio::time::timeout(self.state.config.request_timeout, self.inner.call(req)),
            state: self.state.clone(),
            method,
            uri,
            waiting,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct JsonDeadlineFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        state: AppState,
        method: axum::http::Method,
        uri: axum::http::Uri,
        waiting: Option<Arc<AtomicBool>>,
    }
}

impl<F, E> std::future::Future for JsonDeadlineFuture<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = match std::task::ready!(this.inner.poll(cx)) {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => return Poll::Ready(Err(e)),
            Err(_) => timed_out(this.state, this.method, this.uri, this.waiting),
        };
        Poll::Ready(Ok(crate::error::render_json_error(res)))
    }
}

/// A request body that records whether its reader is waiting for the client: its last
/// poll found no data yet. A body the handler has not started reading does not count: if
/// the deadline passes then, Keyward was slow, not the client.
///
/// A body of its own rather than a stream (`Body::from_stream`): it passes on the inner
/// body's end-of-stream and size hint, so a reader can stop as soon as all of a
/// `Content-Length` has arrived (see the verify API's body reader).
struct Tracked {
    inner: Body,
    waiting: Arc<AtomicBool>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let next = Pin::new(&mut self.inner).poll_frame(cx);
        self.waiting.store(next.is_pending(), Ordering::Relaxed);
        next
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn request(body: Body) -> Request {
        Request::builder().uri("/").body(body).unwrap()
    }

    /// Polls the body once, without waiting.
    fn poll_once(body: &mut Body) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let waker = std::task::Waker::noop();
        Pin::new(body).poll_frame(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_body_of_known_length_reports_its_end_through_the_wrapper() {
        let (req, waiting) = tracked(request(Body::from("{\"key\":1}")));
        let waiting = waiting.expect("a body is watched");
        let mut body = req.into_body();
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(9));
        let Poll::Ready(Some(Ok(frame))) = poll_once(&mut body) else {
            panic!("the frame is there");
        };
        assert_eq!(frame.into_data().unwrap(), "{\"key\":1}");
        // Its end is known without another poll: a reader may stop here.
        assert!(body.is_end_stream());
        assert!(!waiting.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn only_a_reader_waiting_for_the_client_blames_the_client() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let pieces = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|piece| (piece, rx))
        });
        let (req, waiting) = tracked(request(Body::from_stream(pieces)));
        let waiting = waiting.expect("a body is watched");
        let mut body = req.into_body();
        // Not read yet: a deadline passing now is Keyward's (503).
        assert!(!waiting.load(Ordering::Relaxed));
        // Read, and nothing has come: the client's (408).
        assert!(poll_once(&mut body).is_pending());
        assert!(waiting.load(Ordering::Relaxed));
        // A piece arrives and is read: Keyward's again until it waits once more.
        tx.send(Ok(Bytes::from("ab"))).await.unwrap();
        assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Ok(_)))));
        assert!(!waiting.load(Ordering::Relaxed));
        assert!(poll_once(&mut body).is_pending());
        assert!(waiting.load(Ordering::Relaxed));
        drop(tx);
        assert!(body.frame().await.is_none());
        assert!(!waiting.load(Ordering::Relaxed));
    }

    #[test]
    fn an_empty_body_is_not_watched() {
        let (_, waiting) = tracked(request(Body::empty()));
        assert!(waiting.is_none());
    }
}
