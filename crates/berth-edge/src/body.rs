//! Request and response bodies. Both stream frame by frame (no buffering, trailers kept);
//! the request side enforces the size limit, the response side finishes the exchange
//! (metrics, access log, connection reuse) when the last frame or a drop arrives.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::exchange::{Completion, End};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body made by a policy: compressed, or read from a file.
pub type BoxBody = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// How the client's body went, so a failed upstream send can be blamed on the right side.
#[derive(Default)]
pub struct ClientBodyState(AtomicU8);

impl ClientBodyState {
    const TOO_LARGE: u8 = 1;
    const MALFORMED: u8 = 2;

    pub fn too_large(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::TOO_LARGE
    }

    pub fn malformed(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::MALFORMED
    }
}

/// Body sent upstream: the client's body under a size limit, or nothing (a replayable request).
pub enum RequestBody {
    Empty,
    Limited {
        inner: Incoming,
        limit: u64,
        seen: u64,
        state: Arc<ClientBodyState>,
    },
}

impl RequestBody {
    pub fn limited(inner: Incoming, limit: u64) -> (Self, Arc<ClientBodyState>) {
        let state = Arc::new(ClientBodyState::default());
        let body = RequestBody::Limited {
            inner,
            limit,
            seen: 0,
            state: state.clone(),
        };
        (body, state)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Limited {
                inner,
                limit,
                seen,
                state,
            } => {
                let frame = ready!(Pin::new(inner).poll_frame(cx));
                match &frame {
                    Some(Ok(f)) => {
                        if let Some(data) = f.data_ref() {
                            *seen += data.len() as u64;
                            if *seen > *limit {
                                state.0.store(ClientBodyState::TOO_LARGE, Ordering::Relaxed);
                                return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*limit)))));
                            }
                        }
                    }
                    Some(Err(_)) => state.0.store(ClientBodyState::MALFORMED, Ordering::Relaxed),
                    None => {}
                }
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Limited { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Limited { inner, .. } => inner.size_hint(),
        }
    }
}

enum Source {
    Full(Option<Bytes>),
    Upstream(Incoming),
    /// Only routes with compression or static files get here: the plain path stays unboxed.
    Boxed(BoxBody),
}

/// Body sent to the client. Owns the exchange's [`Completion`], which runs exactly once: at
/// the end of the stream, on an upstream error, or when the client goes away (drop).
pub struct ResponseBody {
    source: Source,
    bytes: u64,
    /// Boxed: the body is moved around by hyper, the record is large.
    completion: Option<Box<Completion>>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ResponseBody {
    pub fn full(bytes: Bytes, completion: Box<Completion>) -> Self {
        Self {
            source: Source::Full(Some(bytes)),
            bytes: 0,
            completion: Some(completion),
            deadline: None,
        }
    }

    pub fn upstream(body: Incoming, completion: Box<Completion>) -> Self {
        Self::streaming(Source::Upstream(body), completion)
    }

    pub fn boxed(body: BoxBody, completion: Box<Completion>) -> Self {
        Self::streaming(Source::Boxed(body), completion)
    }

    fn streaming(source: Source, completion: Box<Completion>) -> Self {
        let ended = match &source {
            Source::Full(b) => b.is_none(),
            Source::Upstream(b) => b.is_end_stream(),
            Source::Boxed(b) => b.is_end_stream(),
        };
        let mut this = Self {
            source,
            bytes: 0,
            completion: Some(completion),
            deadline: None,
        };
        // Bodiless responses (HEAD, 204, 304) may never be polled: finish now so the
        // connection goes back to the pool at once.
        if ended {
            this.finish(End::Clean);
        }
        this
    }

    fn finish(&mut self, end: End) {
        if let Some(c) = self.completion.take() {
            (*c).finish(self.bytes, end);
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("upstream response exceeded the total timeout")]
struct TotalTimeout;

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.source {
            Source::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Source::Upstream(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(BoxError::from))),
            Source::Boxed(body) => body.as_mut().poll_frame(cx),
        };
        match polled {
            Poll::Pending => {
                // The total-timeout timer is armed only for bodies that actually stream, so
                // a small response costs no timer.
                if this.deadline.is_none()
                    && let Some(at) = this.completion.as_ref().and_then(|c| c.deadline)
                {
                    this.deadline = Some(Box::pin(tokio::time::sleep_until(at)));
                }
                if let Some(d) = this.deadline.as_mut()
                    && d.as_mut().poll(cx).is_ready()
                {
                    this.finish(End::UpstreamFault("total_timeout"));
                    return Poll::Ready(Some(Err(Box::new(TotalTimeout))));
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(End::UpstreamFault("upstream_body"));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(End::Clean);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Full(b) => b.is_none(),
            Source::Upstream(b) => b.is_end_stream(),
            Source::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Source::Full(None) => SizeHint::with_exact(0),
            Source::Upstream(b) => b.size_hint(),
            Source::Boxed(b) => b.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper stops polling a body whose length is met, so an ended stream is a clean
        // finish; anything else means the client went away mid-response.
        let end = if self.is_end_stream() {
            End::Clean
        } else {
            End::ClientGone
        };
        self.finish(end);
    }
}
