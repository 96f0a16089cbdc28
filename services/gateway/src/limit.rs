//! The size limit on gRPC request messages, answered as Argo CD clients (and the REST side) see
//! an over-long request: ResourceExhausted. tonic's own limit answers OutOfRange, so its limit
//! is set beyond this one and this layer refuses first, reading each message's length from its
//! 5-byte frame header as the body streams in (a streaming call is never buffered).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::{Buf, Bytes};
use http_body::Frame;

/// A gRPC request body that ends with ResourceExhausted at the first message over `limit`.
struct LimitedMessages {
    inner: Body,
    limit: usize,
    /// Bytes of the current frame header seen so far.
    header: Vec<u8>,
    /// Bytes of the current message still to come.
    payload_left: usize,
}

impl LimitedMessages {
    /// Follows the frame boundaries through `data`; the length of a message over the limit.
    fn scan(&mut self, mut data: &[u8]) -> Option<usize> {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                data.advance(n);
                continue;
            }
            let n = (5 - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..n]);
            data.advance(n);
            if self.header.len() == 5 {
                let len = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]) as usize;
                self.header.clear();
                if len > self.limit {
                    return Some(len);
                }
                self.payload_left = len;
            }
        }
        None
    }
}

impl http_body::Body for LimitedMessages {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref()
            && let Some(len) = self.scan(data)
        {
            // tonic answers the call with the status found in the body's error.
            let message = format!("grpc: received message larger than max ({len} vs. {})", self.limit);
            return Poll::Ready(Some(Err(axum::Error::new(tonic::Status::resource_exhausted(message)))));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps each gRPC request's body so that a message over `limit` bytes is refused.
pub async fn grpc_message_limit(limit: usize, req: Request, next: Next) -> Response {
    let req =
        req.map(|inner| Body::new(LimitedMessages { inner, limit, header: Vec::with_capacity(5), payload_left: 0 }));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![0];
        f.extend_from_slice(&(len as u32).to_be_bytes());
        f.extend(std::iter::repeat_n(7u8, len));
        f
    }

    fn limited(limit: usize) -> LimitedMessages {
        LimitedMessages { inner: Body::empty(), limit, header: Vec::new(), payload_left: 0 }
    }

    #[test]
    fn messages_within_the_limit_pass_however_the_body_is_cut() {
        let stream: Vec<u8> = [frame(10), frame(0), frame(16)].concat();
        for cut in 1..stream.len() {
            let mut l = limited(16);
            assert_eq!(l.scan(&stream[..cut]), None, "cut at {cut}");
            assert_eq!(l.scan(&stream[cut..]), None, "cut at {cut}");
        }
    }

    #[test]
    fn the_first_message_over_the_limit_is_caught_even_with_its_header_split() {
        let stream: Vec<u8> = [frame(4), frame(17)].concat();
        let mut l = limited(16);
        assert_eq!(l.scan(&stream[..11]), None);
        assert_eq!(l.scan(&stream[11..]), Some(17));
    }
}
