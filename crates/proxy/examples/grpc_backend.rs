//! A gRPC-shaped HTTP/2 backend for `scripts/tlsbench`: cleartext HTTP/2 (prior knowledge) on
//! each address given, one thread. A request's body is read whole; then a gRPC request
//! (`content-type: application/grpc…`) gets one message and `grpc-status: 0` in trailers,
//! anything else a 13-byte body naming the backend.
//!
//!     cargo run --release -p trellis-proxy --example grpc_backend -- 127.0.0.1:9001 127.0.0.1:9002

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// One data frame, then trailers if any.
struct Answer {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

async fn answer(req: Request<Incoming>, name: &'static str) -> Result<Response<Answer>, Infallible> {
    let grpc = req.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let _ = req.into_body().collect().await;
    let mut response = if grpc {
        let mut message = vec![0, 0, 0, 0, name.len() as u8];
        message.extend_from_slice(name.as_bytes());
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let mut r = Response::new(Answer { data: Some(Bytes::from(message)), trailers: Some(trailers) });
        r.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
        r
    } else {
        Response::new(Answer { data: Some(Bytes::from_static(name.as_bytes())), trailers: None })
    };
    if let Ok(v) = HeaderValue::from_str(name.trim_end()) {
        response.headers_mut().insert("x-backend", v);
    }
    Ok(response)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let names = ["backend-a ok\n", "backend-b ok\n"];
    let mut servers = Vec::new();
    for (i, addr) in std::env::args().skip(1).enumerate() {
        let name = names[i % 2];
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap_or_else(|e| panic!("binding {addr}: {e}"));
        servers.push(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r| answer(r, name));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(1024)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }
    for s in servers {
        let _ = s.await;
    }
}
