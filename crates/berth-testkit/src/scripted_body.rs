//! A response body played from a script of data, pauses, trailers and an abort,
//! which covers every body shape the fake upstream needs.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

#[derive(Debug)]
pub(crate) enum Step {
    Data(Bytes),
    Pause(Duration),
    Trailers(HeaderMap),
    /// Fail the body, which makes hyper close the connection mid-response.
    Abort,
}

/// The error a [`Step::Abort`] produces.
#[derive(Debug)]
pub(crate) struct Aborted;

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fake upstream aborted the body on purpose")
    }
}

impl std::error::Error for Aborted {}

pub(crate) struct ScriptedBody {
    steps: VecDeque<Step>,
    /// Announced length: hyper turns an exact size hint into Content-Length,
    /// which is how a cut-short body is made to look truncated.
    length: Option<u64>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl ScriptedBody {
    pub(crate) fn new(steps: impl IntoIterator<Item = Step>, length: Option<u64>) -> Self {
        ScriptedBody {
            steps: steps.into_iter().collect(),
            length,
            sleep: None,
        }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        let len = bytes.len() as u64;
        ScriptedBody::new([Step::Data(bytes)], Some(len))
    }

    pub(crate) fn empty() -> Self {
        ScriptedBody::new([], Some(0))
    }
}

impl Body for ScriptedBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
            }
            return match this.steps.pop_front() {
                None => Poll::Ready(None),
                Some(Step::Data(bytes)) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Some(Step::Trailers(map)) => Poll::Ready(Some(Ok(Frame::trailers(map)))),
                Some(Step::Abort) => Poll::Ready(Some(Err(Aborted))),
                Some(Step::Pause(d)) => {
                    this.sleep = Some(Box::pin(tokio::time::sleep(d)));
                    continue;
                }
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.steps.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(len) => SizeHint::with_exact(len),
            None => SizeHint::default(),
        }
    }
}
