//! Response bodies: empty, whole, or streamed from a channel so that a blob
//! of any size passes through in bounded memory.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body fed by a producer task; an `Err` item aborts the response, which
/// the client sees as a truncated transfer rather than corrupt data.
pub fn channel(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Body {
    let frames = ReceiverStream::new(rx).map(|r| r.map(Frame::data));
    BodyExt::boxed(StreamBody::new(frames))
}
