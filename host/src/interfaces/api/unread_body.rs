//! Keeping kept-alive connections usable after a response that did not read its request body.
//!
//! A handler may answer without reading the body (a 401 from the key check, a 403, a 404 from
//! the router). hyper then tries one cheap read of the rest and, if the body is not all there
//! yet, closes the connection — after it has already written a response that promised to keep
//! it open. A client that sends its next request on that connection sees a broken pipe.
//!
//! [`drain_unread_body`] wraps every request body so that the part the handler left unread comes
//! back to it when the handler is done. Before the response leaves, it reads that rest and
//! discards it, up to the request body limit and for at most [`DRAIN_TIMEOUT`]; if the rest is
//! larger, slower, or broken, the response carries `Connection: close` so the client knows the
//! connection ends with it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, EXPECT};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::oneshot;

/// How long the rest of an unread body may take to arrive before the connection is closed
/// instead: a well-behaved client sends its body right behind the headers, so this only runs
/// out for a client that stalls mid-body, which should not hold the response back for long.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// A request body that hands its unread rest back to [`drain_unread_body`] when dropped.
struct WatchedBody {
    inner: Option<Body>,
    finished: bool,
    unread: Option<oneshot::Sender<Body>>,
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.finished = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let (Some(inner), Some(unread)) = (self.inner.take(), self.unread.take()) {
            if !inner.is_end_stream() {
                let _ = unread.send(inner);
            }
        }
    }
}

/// Middleware: after the handler answers, reads and discards what it left of the request body
/// (at most `limit` bytes within [`DRAIN_TIMEOUT`]), or marks the response `Connection: close`.
pub async fn drain_unread_body(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let expects_continue = request.headers().contains_key(EXPECT);
    let (parts, body) = request.into_parts();
    let (unread_tx, mut unread_rx) = oneshot::channel();
    let watched = WatchedBody {
        finished: body.is_end_stream(),
        inner: Some(body),
        unread: Some(unread_tx),
    };
    let mut response = next
        .run(Request::from_parts(parts, Body::new(watched)))
        .await;
    let rest = match unread_rx.try_recv() {
        Ok(rest) => rest,
        // Read to the end, or still held by something that outlives the handler (which then
        // reads it, or drops it and hyper closes as it would have).
        Err(_) => return response,
    };
    // A client waiting for `100 Continue` has not sent its body: reading it now would only
    // ask for bytes nobody wants.
    let drained = !expects_continue && drain(rest, limit).await;
    if !drained {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads `body` to its end and discards it; false if it is longer than `limit`, fails, or does
/// not end within [`DRAIN_TIMEOUT`].
async fn drain(body: Body, limit: usize) -> bool {
    if body.size_hint().lower() > u64::try_from(limit).unwrap_or(u64::MAX) {
        return false;
    }
    let mut stream = body.into_data_stream();
    let read_all = async {
        use futures_util::StreamExt;
        let mut read = 0usize;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    read = read.saturating_add(chunk.len());
                    if read > limit {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIMEOUT, read_all)
        .await
        .unwrap_or(false)
}
