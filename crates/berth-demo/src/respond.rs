//! Small response builders so route code reads as "what", not header plumbing.

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use crate::body::DemoBody;

pub fn text_type() -> HeaderValue {
    HeaderValue::from_static("text/plain; charset=utf-8")
}

pub fn json_type() -> HeaderValue {
    HeaderValue::from_static("application/json")
}

pub fn with(status: StatusCode, content_type: HeaderValue, body: DemoBody) -> Response<DemoBody> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, content_type);
    res
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<DemoBody> {
    with(status, text_type(), DemoBody::full(body))
}

pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<DemoBody> {
    with(status, json_type(), DemoBody::full(body))
}

pub fn empty(status: StatusCode) -> Response<DemoBody> {
    let mut res = Response::new(DemoBody::empty());
    *res.status_mut() = status;
    res
}
