//! The HTTP server's accept loop and the gRPC server's connections, with
//! the bounds that keep slow or idle clients from holding the server.
//!
//! ```text
//!  HTTP  accept (at most --server.http-conn-limit open; more wait in the
//!        kernel's backlog)
//!   └─ connection: request headers within --server.http-read-header-timeout
//!      (for HTTP/1 also the wait for the next request), the body within
//!      --server.http-read-timeout, closed after --server.http-idle-timeout
//!      with no request in flight
//!       └─ request: one of --server.http-max-inflight-requests, or 503
//!  gRPC  accept (at most --server.grpc-conn-limit open), at most
//!        --server.grpc-max-concurrent-streams streams a connection, closed
//!        when nothing is read for --server.grpc-idle-timeout (the server
//!        pings live clients at half that)
//! ```

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use cairn_common::Shutdown;
use cairn_common::task::catch_panic_async;
use http_body::{Body as HttpBody, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tower::ServiceExt;
use tracing::{debug, error, warn};

use crate::config::ServerConfig;

/// Bounds of the HTTP listener.
#[derive(Clone, Copy, Debug)]
pub struct HttpBounds {
    pub read_header_timeout: Duration,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    pub conn_limit: usize,
    pub max_inflight: usize,
}

impl HttpBounds {
    pub fn from_config(c: &ServerConfig) -> Self {
        Self {
            read_header_timeout: c.http_read_header_timeout.as_std(),
            read_timeout: c.http_read_timeout.as_std(),
            idle_timeout: c.http_idle_timeout.as_std(),
            conn_limit: c.http_conn_limit,
            max_inflight: c.http_max_inflight_requests,
        }
    }
}

/// Requests in flight on one connection and when the last one ended, so
/// that an idle connection can be told from a busy one.
#[derive(Debug)]
struct Activity {
    inflight: AtomicUsize,
    /// Milliseconds since `epoch` of the last request's start or end.
    last: AtomicI64,
    epoch: Instant,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self { inflight: AtomicUsize::new(0), last: AtomicI64::new(0), epoch: Instant::now() })
    }

    fn touch(&self) {
        self.last.store(self.epoch.elapsed().as_millis() as i64, Ordering::Relaxed);
    }

    /// Resolves once the connection has had no request in flight for `idle`.
    async fn idle(&self, idle: Duration) {
        if idle.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let since =
                self.epoch.elapsed().saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed) as u64));
            if self.inflight.load(Ordering::Relaxed) == 0 && since >= idle {
                return;
            }
            tokio::time::sleep(idle.saturating_sub(since).max(Duration::from_millis(100))).await;
        }
    }
}

/// Ends a request on its connection's [`Activity`] when dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(a: &Arc<Activity>) -> Self {
        a.inflight.fetch_add(1, Ordering::Relaxed);
        a.touch();
        Self(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request body that fails once its deadline passes (none: no limit): a
/// client that trickles its body cannot hold a request open.
struct DeadlineBody<B> {
    inner: B,
    deadline: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
}

impl<B> DeadlineBody<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        let deadline = (!timeout.is_zero()).then(|| Box::pin(tokio::time::sleep(timeout)));
        Self { inner, deadline, timeout }
    }
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some(deadline) = self.deadline.as_mut() else { return Poll::Pending };
        ready!(deadline.as_mut().poll(cx));
        let msg = format!("the request body did not arrive within {:?} (--server.http-read-timeout)", self.timeout);
        Poll::Ready(Some(Err(Box::new(io::Error::new(io::ErrorKind::TimedOut, msg)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds its request's in-flight slot and keeps its
/// connection busy until the body is sent (or dropped), so a client that
/// reads its answer slowly still counts against the limits.
struct HeldBody {
    inner: Body,
    _slot: Option<OwnedSemaphorePermit>,
    _busy: InFlight,
}

impl HttpBody for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Paths outside the in-flight limit: health, readiness, metrics.
fn is_ops(path: &str) -> bool {
    matches!(path, "/-/healthy" | "/-/ready" | "/ready" | "/metrics")
}

fn internal_error() -> Response<Body> {
    let mut r = Response::new(Body::from("internal error; see the server's log\n"));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}

fn overloaded(limit: usize) -> Response<Body> {
    let mut r = Response::new(Body::from(format!(
        "more than {limit} requests are in flight; retry later (raise --server.http-max-inflight-requests)\n"
    )));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Serves `app` on `listener` within `bounds` until `stop`, then lets the
/// open connections finish their requests (the caller bounds how long).
pub async fn serve_http(listener: TcpListener, app: Router, bounds: HttpBounds, stop: Shutdown) -> io::Result<()> {
    let connections = Arc::new(Semaphore::new(bounds.conn_limit.max(1)));
    let inflight = Arc::new(Semaphore::new(bounds.max_inflight.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout((!bounds.read_header_timeout.is_zero()).then_some(bounds.read_header_timeout));
    builder.http2().timer(TokioTimer::new());
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was taken: wait a little rather than spin.
                    warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let svc = {
            let (app, inflight, activity) = (app.clone(), inflight.clone(), activity.clone());
            tower::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (app, inflight, activity) = (app.clone(), inflight.clone(), activity.clone());
                async move {
                    // Health checks and metrics are answered even when the
                    // server sheds load: an overloaded process is not dead.
                    let slot = if is_ops(req.uri().path()) {
                        None
                    } else {
                        match inflight.try_acquire_owned() {
                            Ok(slot) => Some(slot),
                            Err(_) => return Ok::<_, std::convert::Infallible>(overloaded(bounds.max_inflight)),
                        }
                    };
                    let busy = InFlight::start(&activity);
                    let (parts, body) = req.into_parts();
                    let req = Request::from_parts(parts, Body::new(DeadlineBody::new(body, bounds.read_timeout)));
                    // A panic while serving one request fails that request,
                    // not the connection or anything else.
                    let response = match catch_panic_async(app.oneshot(req)).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(never)) => match never {},
                        Err(panic) => {
                            error!(error = %panic, "a request handler panicked");
                            internal_error()
                        }
                    };
                    Ok(response.map(|inner| Body::new(HeldBody { inner, _slot: slot, _busy: busy })))
                }
            })
        };
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn.into_owned());
        let idle = bounds.idle_timeout;
        tokio::spawn(async move {
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = activity.idle(idle) => debug!("closed an idle HTTP connection"),
            }
            drop(permit);
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// Bounds of the gRPC listener.
#[derive(Clone, Copy, Debug)]
pub struct GrpcBounds {
    pub conn_limit: usize,
    pub idle_timeout: Duration,
}

/// A gRPC connection: holds its slot of the connection limit, and fails
/// once nothing was read from it for the idle timeout.
pub struct GrpcConn {
    inner: TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for GrpcConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before && !self.idle.is_zero() {
                    let next = tokio::time::Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !self.idle.is_zero() && self.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "gRPC connection idle")));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for GrpcConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The accepted connections of `listener`, at most `bounds.conn_limit`
/// open at once.
pub fn grpc_incoming(
    listener: TcpListener,
    bounds: GrpcBounds,
) -> impl futures::Stream<Item = io::Result<GrpcConn>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(bounds.conn_limit.max(1)));
    futures::stream::unfold((listener, slots), move |(listener, slots)| async move {
        let slot = slots.clone().acquire_owned().await.ok()?;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = GrpcConn {
                        inner: stream,
                        idle: bounds.idle_timeout,
                        deadline: Box::pin(tokio::time::sleep(bounds.idle_timeout)),
                        _slot: slot,
                    };
                    return Some((Ok(conn), (listener, slots)));
                }
                Err(e) => {
                    warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn bounds(read_timeout: Duration, max_inflight: usize) -> HttpBounds {
        HttpBounds {
            read_header_timeout: Duration::from_secs(5),
            read_timeout,
            idle_timeout: Duration::from_secs(5),
            conn_limit: 16,
            max_inflight,
        }
    }

    async fn start(bounds: HttpBounds) -> (SocketAddr, Shutdown) {
        let app = Router::new()
            .route(
                "/echo",
                post(|body: Bytes| async move { body.len().to_string() })
                    .layer(axum::extract::DefaultBodyLimit::disable()),
            )
            .route("/forever", get(|| async { Body::from_stream(futures::stream::pending::<io::Result<Bytes>>()) }))
            .route("/panic", get(|| async { if true { panic!("boom") } else { "" } }))
            .route("/-/healthy", get(|| async { "ok" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Shutdown::new();
        tokio::spawn(serve_http(listener, app, bounds, stop.clone()));
        (addr, stop)
    }

    /// Sends `head`, then `body` in two halves `pause` apart; returns the
    /// status line.
    async fn exchange(addr: SocketAddr, head: &str, body: &[u8], pause: Duration) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(head.as_bytes()).await.expect("head");
        let (a, b) = body.split_at(body.len() / 2);
        s.write_all(a).await.expect("first half");
        tokio::time::sleep(pause).await;
        let _ = s.write_all(b).await;
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("answer").unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_owned()
    }

    fn post_head(len: usize) -> String {
        format!("POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn a_zero_read_timeout_means_no_limit() {
        let (addr, stop) = start(bounds(Duration::ZERO, 8)).await;
        let status = exchange(addr, &post_head(10), b"0123456789", Duration::from_millis(300)).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_body_slower_than_the_read_timeout_fails() {
        let (addr, stop) = start(bounds(Duration::from_millis(100), 8)).await;
        let fast = exchange(addr, &post_head(10), b"0123456789", Duration::ZERO).await;
        assert_eq!(fast, "HTTP/1.1 200 OK");
        let slow = exchange(addr, &post_head(10), b"0123456789", Duration::from_millis(500)).await;
        assert!(!slow.contains("200"), "a trickled body is refused: {slow:?}");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_response_still_being_sent_holds_its_in_flight_slot() {
        let (addr, stop) = start(bounds(Duration::from_secs(5), 1)).await;
        // The first request's answer never ends: its slot stays taken.
        let mut first = TcpStream::connect(addr).await.expect("connect");
        first.write_all(b"GET /forever HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("send");
        let mut buf = vec![0; 1024];
        let n = first.read(&mut buf).await.expect("headers");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        let second = exchange(addr, &post_head(2), b"ok", Duration::ZERO).await;
        assert_eq!(second, "HTTP/1.1 503 Service Unavailable");
        let health =
            exchange(addr, "GET /-/healthy HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", b"", Duration::ZERO)
                .await;
        assert_eq!(health, "HTTP/1.1 200 OK", "health checks bypass the limit");
        // Once the client hangs up, the slot is free again.
        drop(first);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let third = exchange(addr, &post_head(2), b"ok", Duration::ZERO).await;
        assert_eq!(third, "HTTP/1.1 200 OK");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_handler_panic_answers_500_and_the_server_goes_on() {
        let (addr, stop) = start(bounds(Duration::from_secs(5), 8)).await;
        let status =
            exchange(addr, "GET /panic HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", b"", Duration::ZERO).await;
        assert_eq!(status, "HTTP/1.1 500 Internal Server Error");
        let after = exchange(addr, &post_head(2), b"ok", Duration::ZERO).await;
        assert_eq!(after, "HTTP/1.1 200 OK");
        stop.cancel();
    }
}
