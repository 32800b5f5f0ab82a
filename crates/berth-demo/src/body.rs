//! The one response body type the demo uses: an enum rather than a boxed trait
//! object so the hot path (`GET /`, `/health`) allocates nothing for its body.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// A static run of 'x' that `/bytes` slices, so large bodies cost no allocation.
static FILLER: [u8; 64 * 1024] = [b'x'; 64 * 1024];

#[derive(Debug)]
pub enum DemoBody {
    /// A complete body; `None` once it has been yielded.
    Full(Option<Bytes>),
    /// `remaining` bytes of 'x'.
    Filler { remaining: u64 },
    /// Frames produced by a task, for streaming responses (SSE, trailers). No
    /// length is known, so hyper sends it chunked.
    Channel(mpsc::Receiver<Frame<Bytes>>),
}

impl DemoBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        DemoBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> Self {
        DemoBody::Full(None)
    }

    pub fn filler(len: u64) -> Self {
        DemoBody::Filler { remaining: len }
    }

    /// A streaming body plus the sender that feeds it. The small bound keeps a
    /// slow reader from letting the producer run ahead.
    pub fn channel() -> (mpsc::Sender<Frame<Bytes>>, Self) {
        let (tx, rx) = mpsc::channel(4);
        (tx, DemoBody::Channel(rx))
    }
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            DemoBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            DemoBody::Filler { remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = (*remaining).min(FILLER.len() as u64);
                *remaining -= n;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                    &FILLER[..n as usize],
                )))))
            }
            DemoBody::Channel(rx) => rx.poll_recv(cx).map(|frame| frame.map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DemoBody::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            DemoBody::Filler { remaining } => *remaining == 0,
            DemoBody::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DemoBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            DemoBody::Filler { remaining } => SizeHint::with_exact(*remaining),
            DemoBody::Channel(_) => SizeHint::default(),
        }
    }
}
