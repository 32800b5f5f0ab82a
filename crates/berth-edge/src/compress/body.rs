//! A body compressed as it streams. Input is fed to the encoder as it arrives; output is sent
//! when enough has built up, and flushed whenever the inner body has nothing more for now, so a
//! server-sent event or a long-poll answer leaves at once instead of waiting for more input.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};

use crate::body::BoxError;
use crate::spec::Encoding;

/// Send compressed output once this much has built up, even mid-stream.
const HIGH_WATER: usize = 32 * 1024;
/// Fast levels: on-the-fly compression must not cost more than the bytes it saves.
const GZIP_LEVEL: u32 = 5;
const BROTLI_QUALITY: u32 = 4;
const BROTLI_WINDOW: u32 = 22;
const BROTLI_BUFFER: usize = 4096;
const ZSTD_LEVEL: i32 = 3;

/// A streaming encoder writing into memory.
pub enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// Fails only when zstd cannot allocate its context.
    pub fn new(encoding: Encoding) -> io::Result<Self> {
        Ok(match encoding {
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
            Encoding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                BROTLI_QUALITY,
                BROTLI_WINDOW,
            ))),
            Encoding::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?)
            }
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Encoder::Gzip(e) => e,
            Encoder::Brotli(e) => e.as_mut(),
            Encoder::Zstd(e) => e,
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        }
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.output()))
    }

    /// Ends the stream (trailers of the format included) and returns the last output.
    fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Brotli(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

pub struct Compressed<B> {
    inner: B,
    encoder: Option<Encoder>,
    /// Input went in since the last flush.
    dirty: bool,
    /// The inner body's trailers, sent after the last compressed bytes.
    trailers: Option<HeaderMap>,
    ended: bool,
}

impl<B> Compressed<B> {
    pub fn new(inner: B, encoder: Encoder) -> Self {
        Compressed {
            inner,
            encoder: Some(encoder),
            dirty: false,
            trailers: None,
            ended: false,
        }
    }
}

impl<B> Compressed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// The last compressed bytes, then the trailers, then the end.
    fn wind_up(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(encoder) = self.encoder.take() {
            match encoder.finish() {
                Ok(last) if !last.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(last)))));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        self.ended = true;
        Poll::Ready(None)
    }
}

impl<B> Body for Compressed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return this.wind_up();
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if let Err(e) = encoder.writer().write_all(&data) {
                            return Poll::Ready(Some(Err(e.into())));
                        }
                        this.dirty = true;
                        if encoder.output().len() >= HIGH_WATER {
                            return Poll::Ready(Some(Ok(Frame::data(encoder.take()))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            this.trailers = Some(t);
                        }
                        return this.wind_up();
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => return this.wind_up(),
                Poll::Pending => {
                    // Nothing more for now: whatever came in goes out, so a stream that
                    // pauses (events, long polls) is not held back by the encoder.
                    if this.dirty {
                        this.dirty = false;
                        if let Err(e) = encoder.writer().flush() {
                            return Poll::Ready(Some(Err(e.into())));
                        }
                        let out = encoder.take();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::io::Read;

    fn body_of(chunks: Vec<&'static [u8]>) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c))));
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn compress(encoding: Encoding, chunks: Vec<&'static [u8]>) -> Vec<u8> {
        let body = Compressed::new(body_of(chunks), Encoder::new(encoding).expect("encoder"));
        body.collect()
            .await
            .expect("compressed")
            .to_bytes()
            .to_vec()
    }

    fn decompress(encoding: Encoding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match encoding {
            Encoding::Gzip => flate2::read::GzDecoder::new(data).read_to_end(&mut out),
            Encoding::Brotli => brotli::Decompressor::new(data, 4096).read_to_end(&mut out),
            Encoding::Zstd => {
                zstd::stream::read::Decoder::new(data).and_then(|mut d| d.read_to_end(&mut out))
            }
        }
        .expect("decompresses");
        out
    }

    #[tokio::test]
    async fn round_trips_in_every_encoding() {
        let text: &'static [u8] = b"hello, compressed world. hello, compressed world. ";
        for encoding in [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd] {
            let out = compress(encoding, vec![text, text, b"end"]).await;
            let mut want = text.repeat(2);
            want.extend_from_slice(b"end");
            assert_eq!(decompress(encoding, &out), want, "{encoding:?}");
            assert!(out.len() < want.len(), "{encoding:?} did not shrink");
        }
    }

    #[tokio::test]
    async fn a_pausing_stream_is_flushed_at_each_pause() {
        use tokio::io::AsyncWriteExt;
        for encoding in [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd] {
            let (mut tx, rx) = tokio::io::duplex(1024);
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 256];
                match rx.read(&mut buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok::<_, BoxError>(Frame::data(Bytes::from(buf))), rx))
                    }
                }
            });
            let mut body = Compressed::new(
                StreamBody::new(Box::pin(stream)),
                Encoder::new(encoding).expect("encoder"),
            );
            tx.write_all(b"data: 1\n\n").await.expect("write");
            // The event must come out decodable before any more input arrives.
            let first = tokio::time::timeout(std::time::Duration::from_secs(2), body.frame())
                .await
                .expect("flushed without more input")
                .expect("a frame")
                .expect("data");
            let data = first.into_data().expect("data frame");
            let mut seen = Vec::new();
            match encoding {
                Encoding::Gzip => {
                    let mut d = flate2::write::GzDecoder::new(Vec::new());
                    d.write_all(&data).expect("gzip prefix");
                    d.flush().expect("flush");
                    seen = d.get_ref().clone();
                }
                Encoding::Brotli => {
                    let mut d = brotli::DecompressorWriter::new(Vec::new(), 4096);
                    d.write_all(&data).expect("brotli prefix");
                    d.flush().expect("flush");
                    seen = d.get_ref().clone();
                }
                Encoding::Zstd => {
                    let mut d = zstd::stream::write::Decoder::new(Vec::new()).expect("decoder");
                    d.write_all(&data).expect("zstd prefix");
                    d.flush().expect("flush");
                    seen.extend_from_slice(d.get_ref());
                }
            }
            assert_eq!(seen, b"data: 1\n\n", "{encoding:?}");
            drop(tx);
            let rest = body.collect().await.expect("rest").to_bytes();
            let mut all = data.to_vec();
            all.extend_from_slice(&rest);
            assert_eq!(decompress(encoding, &all), b"data: 1\n\n", "{encoding:?}");
        }
    }
}
