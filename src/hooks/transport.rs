//! One hook request: `POST` the signed event to `hooks.url` (or a Pusher
//! webhook to `pusher.webhook_url`) (`http://` over
//! TCP, or `unix:/path` to a Unix socket) and read the answer, within
//! `hooks.timeout`. One connection per request: hook traffic is a few
//! events per client session, and a fresh connection never trips over a
//! keep-alive the backend already closed.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};

/// Largest answer read; `{"allow":false,"reason":"..."}` is far smaller.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// Where hook requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `http://host:port/path`.
    Tcp {
        /// `host:port` to connect to (port 80 when absent).
        authority: String,
        /// The request target, `/path?query`.
        path: String,
    },
    /// `unix:/path/to.sock`: requests go to `/` on that socket.
    Unix(std::path::PathBuf),
}

impl Target {
    /// Parses `hooks.url`.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{url:?}: unix: needs an absolute socket path, like unix:/run/app/hooks.sock"
                ));
            }
            return Ok(Target::Unix(path.into()));
        }
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "{url:?}: only http:// and unix:/path are supported (put TLS in front of the backend's side, or use a loopback or Unix socket)"
            ));
        }
        let host = uri.host().ok_or_else(|| format!("{url:?} names no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let path = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        Ok(Target::Tcp {
            authority: format!("{host}:{port}"),
            path,
        })
    }
}

impl std::fmt::Display for Target {
    /// As `hooks.url` would name it (for logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp { authority, path } => write!(f, "http://{authority}{path}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Why a hook request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No answer within `hooks.timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Could not connect, or the connection failed.
    #[error("{0}")]
    Io(String),
    /// An answer other than 2xx.
    #[error("the backend answered HTTP {0}")]
    Status(u16),
}

impl SendError {
    /// What went wrong, without the details that vary from one failure to
    /// the next (to tell failures alike in logs): `timeout`, `connection`,
    /// or `HTTP <status>`.
    pub fn kind(&self) -> String {
        match self {
            SendError::Timeout(_) => "timeout".into(),
            SendError::Io(_) => "connection".into(),
            SendError::Status(status) => format!("HTTP {status}"),
        }
    }
}

/// Sends `body` with `headers` (its signature); returns the 2xx answer's
/// body.
pub async fn post(
    target: &Target,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Bytes, SendError> {
    tokio::time::timeout(timeout, exchange(target, headers, body))
        .await
        .map_err(|_| SendError::Timeout(timeout))?
}

async fn exchange(
    target: &Target,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Result<Bytes, SendError> {
    let (host, path) = match target {
        Target::Tcp { authority, path } => (authority.as_str(), path.as_str()),
        Target::Unix(_) => ("localhost", "/"),
    };
    let request = Request::post(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "cometbox-hooks");
    let request = headers
        .iter()
        .fold(request, |request, (name, value)| {
            request.header(*name, value)
        })
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| SendError::Io(e.to_string()))?;
    let io = |e: std::io::Error| SendError::Io(e.to_string());
    match target {
        Target::Tcp { authority, .. } => {
            let stream = TcpStream::connect(authority.as_str()).await.map_err(io)?;
            let _ = stream.set_nodelay(true);
            send_on(TokioIo::new(stream), request).await
        }
        Target::Unix(path) => {
            let stream = UnixStream::connect(path).await.map_err(io)?;
            send_on(TokioIo::new(stream), request).await
        }
    }
}

async fn send_on<S>(io: S, request: Request<Full<Bytes>>) -> Result<Bytes, SendError>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let failed = |e: hyper::Error| SendError::Io(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(failed)?;
    let _driver = AbortOnDrop(tokio::spawn(connection));
    let answer = async {
        let response = sender.send_request(request).await.map_err(failed)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| SendError::Io(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(SendError::Status(status.as_u16()));
        }
        Ok(body)
    }
    .await;
    answer
}

/// Ends the task driving the connection (closing it) when the request is
/// done or dropped by the timeout.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            Target::parse("http://127.0.0.1:9000/hook.php?x=1").unwrap(),
            Target::Tcp {
                authority: "127.0.0.1:9000".into(),
                path: "/hook.php?x=1".into()
            }
        );
        assert_eq!(
            Target::parse("http://backend").unwrap(),
            Target::Tcp {
                authority: "backend:80".into(),
                path: "/".into()
            }
        );
        assert_eq!(
            Target::parse("unix:/run/app.sock").unwrap(),
            Target::Unix("/run/app.sock".into())
        );
        assert!(Target::parse("https://x/").is_err());
        assert!(Target::parse("unix:relative").is_err());
        assert!(Target::parse("not a url").is_err());
    }
}
