//! The images the `trellis` binary serves itself, so that tasks run without a container
//! registry: `trellis image <name>` runs one (the task runner starts it that way).
//!
//! - `amazon/amazon-ecs-sample` (also `public.ecr.aws/ecs-sample-image/amazon-ecs-sample`): a
//!   sample web app; every GET answers an HTML page that names the task and its address.
//! - `trellis/echo`: answers every request with what it received, as JSON (method, path,
//!   headers, body up to 64 KiB), and who answered (task, address, process ID, and `$VERSION`).
//!   `?delay_ms=N` in the query holds the answer back N ms (at most a minute), so that tests
//!   can keep a request in flight, e.g. while its task drains.
//!
//! Both listen on `HOST` (default all addresses) and `PORT` (default 80), as the task runner
//! sets them, and stop on SIGTERM.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// The largest request body the echo image returns.
const ECHO_LIMIT: usize = 64 * 1024;
/// The longest the echo image holds an answer back (`?delay_ms=`).
const ECHO_MAX_DELAY: Duration = Duration::from_secs(60);

/// A built-in image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image {
    /// The sample web app.
    Sample,
    /// The echo server.
    Echo,
}

// === impl Image ===

impl Image {
    /// The built-in image an ECS `image` names (any `:tag` or `@digest`), if any.
    pub fn named(image: &str) -> Option<Self> {
        let name = image.split('@').next().unwrap_or(image);
        // A tag follows the last ':' after the last '/' (a registry may have a port).
        let name = match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => &name[..i],
            _ => name,
        };
        match name {
            "amazon/amazon-ecs-sample" | "public.ecr.aws/ecs-sample-image/amazon-ecs-sample" => Some(Self::Sample),
            "trellis/echo" => Some(Self::Echo),
            _ => None,
        }
    }

    /// The name `trellis image` takes.
    pub fn cli_name(self) -> &'static str {
        match self {
            Self::Sample => "sample",
            Self::Echo => "echo",
        }
    }

    /// The image `trellis image <name>` runs.
    pub fn from_cli_name(name: &str) -> Option<Self> {
        [Self::Sample, Self::Echo].into_iter().find(|i| i.cli_name() == name)
    }
}

/// Serves `image` on `HOST`:`PORT` until SIGTERM or SIGINT.
pub async fn serve(image: Image) -> std::io::Result<()> {
    let host: IpAddr =
        std::env::var("HOST").ok().and_then(|h| h.parse().ok()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(80);
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(host, port)).await?;
    eprintln!("{} listening on {}", image.cli_name(), listener.local_addr()?);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(image, peer, req));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn answer(image: Image, peer: SocketAddr, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match image {
        Image::Sample => sample(&req),
        Image::Echo => echo(peer, req).await,
    })
}

fn sample(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let task = std::env::var("TRELLIS_TASK_ARN").unwrap_or_else(|_| "(not an ECS task)".into());
    let address = std::env::var("TRELLIS_TASK_ADDRESS").unwrap_or_else(|_| "(unknown)".into());
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let page = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Trellis sample app</title></head>\n\
         <body style=\"font-family: sans-serif; margin: 3em\">\n\
         <h1>Trellis sample app</h1>\n\
         <p>Your application is running as an ECS task behind VPC Lattice.</p>\n\
         <p>Task: <code>{}</code><br>Address: <code>{}</code><br>Asked for: <code>{}</code></p>\n\
         </body></html>\n",
        escape(&task),
        escape(&address),
        escape(host)
    );
    let mut resp = Response::new(Full::new(Bytes::from(page)));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/html; charset=utf-8"));
    resp
}

async fn echo(peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, ECHO_LIMIT).collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"request body too large\n")));
            *resp.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return resp;
        }
    };
    tokio::time::sleep(delay(parts.uri.query())).await;
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned().into()))
        .collect();
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.to_string(),
        "headers": headers,
        "body": body,
        "peer": peer.to_string(),
        "task": std::env::var("TRELLIS_TASK_ARN").ok(),
        "pid": std::process::id(),
        "version": std::env::var("VERSION").ok(),
        "address": std::env::var("TRELLIS_TASK_ADDRESS").ok(),
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp
}

/// How long the echo image holds back the answer to a request with `query`: `delay_ms`, if
/// any, up to [`ECHO_MAX_DELAY`].
fn delay(query: Option<&str>) -> Duration {
    let ms = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("delay_ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_millis(ms).min(ECHO_MAX_DELAY)
}

/// Escapes text for HTML.
fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_named_with_any_tag() {
        for name in [
            "amazon/amazon-ecs-sample",
            "amazon/amazon-ecs-sample:latest",
            "public.ecr.aws/ecs-sample-image/amazon-ecs-sample:v2",
            "amazon/amazon-ecs-sample@sha256:00",
        ] {
            assert_eq!(Image::named(name), Some(Image::Sample), "{name}");
        }
        assert_eq!(Image::named("trellis/echo:1"), Some(Image::Echo));
        assert_eq!(Image::named("nginx:latest"), None);
        assert_eq!(Image::named("registry:5000/amazon/amazon-ecs-sample"), None);
        assert_eq!(Image::from_cli_name("echo"), Some(Image::Echo));
    }

    #[test]
    fn echo_delays_are_read_from_the_query() {
        assert_eq!(delay(None), Duration::ZERO);
        assert_eq!(delay(Some("a=1&delay_ms=250")), Duration::from_millis(250));
        assert_eq!(delay(Some("delay_ms=oops")), Duration::ZERO);
        assert_eq!(delay(Some("delay_ms=999999999")), ECHO_MAX_DELAY);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
