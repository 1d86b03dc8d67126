//! Accepting connections, for the gateway and the admin listener alike:
//! the connection limit (refused at accept so admitted connections are not
//! slowed), the TLS handshake (with a deadline), HTTP/1.1 and HTTP/2 by
//! ALPN, the header-read deadline, and the request's id and arrival facts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::util::BoxCloneService;
use tower::Service;

use crate::context::RequestInfo;
use crate::metrics::GatewayMetrics;
use crate::{BoxError, GatewayRequest, GatewayResponse};

/// The service a listener runs for every request.
pub type ListenerService = BoxCloneService<GatewayRequest, GatewayResponse, Infallible>;

/// How a listener accepts.
#[derive(Clone)]
pub struct ServeOptions {
    /// TLS; `None` only when the operator set `insecure_http`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Open connections allowed.
    pub max_connections: usize,
    /// Deadline for a request's headers.
    pub header_read_timeout: Duration,
    /// A connection (HTTP/1.1 keep-alive or HTTP/2) that starts no request
    /// for this long is closed gracefully, freeing its connection slot;
    /// responses still streaming finish first.
    pub idle_timeout: Duration,
    /// Header bytes hyper buffers before it refuses with 431 itself.
    pub max_header_bytes: usize,
    /// Metrics to count connections in.
    pub metrics: Option<Arc<GatewayMetrics>>,
    /// Judges client certificates (when the TLS config asks for them).
    pub client_certs: Option<Arc<citadel_crypto::ClientCertChecker>>,
}

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `shutdown` turns true, then lets open
/// connections finish their requests (up to 10 s).
pub async fn serve(
    listener: TcpListener,
    options: ServeOptions,
    service: ListenerService,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(m) = &options.metrics {
                m.refused_connections.inc();
            }
            tracing::debug!(client = %peer, "connection limit reached; connection refused");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let options = options.clone();
        let service = service.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let open = options.metrics.clone();
            if let Some(m) = &open {
                m.open_connections.inc();
            }
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls)) => {
                            let client_cert = match (
                                &options.client_certs,
                                tls.get_ref().1.peer_certificates(),
                            ) {
                                (Some(checker), Some(chain)) => checker.check(chain).map(Arc::new),
                                _ => None,
                            };
                            let conn = ConnectionFacts {
                                peer,
                                tls: true,
                                client_cert,
                            };
                            serve_connection(tls, conn, &options, service, shutdown).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
                    }
                }
                None => {
                    let conn = ConnectionFacts {
                        peer,
                        tls: false,
                        client_cert: None,
                    };
                    serve_connection(stream, conn, &options, service, shutdown).await
                }
            }
            if let Some(m) = &open {
                m.open_connections.dec();
            }
        });
    }
    // Wait for connections to drain.
    let deadline = Instant::now() + Duration::from_secs(10);
    while permits.available_permits() < options.max_connections && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a connection is doing, for the idle timeout.
struct Activity {
    started: Instant,
    /// Milliseconds after `started` of the last request start or end.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// How long nothing has been in flight; 0 while something is.
    fn idle_ms(&self) -> u64 {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return 0;
        }
        self.now_ms()
            .saturating_sub(self.last_ms.load(Ordering::Acquire))
    }
}

/// One request in flight on a connection; ends when dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.last_ms.store(activity.now_ms(), Ordering::Release);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight.
struct InFlightBody {
    inner: crate::GatewayBody,
    _guard: InFlight,
}

impl http_body::Body for InFlightBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What is known of a connection once it is accepted.
struct ConnectionFacts {
    peer: SocketAddr,
    tls: bool,
    client_cert: Option<Arc<citadel_crypto::ClientCert>>,
}

/// `Strict-Transport-Security` on every answer over TLS: a year, subdomains too.
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

async fn serve_connection<I>(
    io: I,
    conn: ConnectionFacts,
    options: &ServeOptions,
    service: ListenerService,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        started: Instant::now(),
        last_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let seen = activity.clone();
    let ConnectionFacts {
        peer,
        tls,
        client_cert,
    } = conn;
    let hyper_service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        // Counted from the request's arrival until its response body is done
        // (or abandoned), so a long streamed answer is not "idle".
        let guard = InFlight::start(seen.clone());
        let mut service = service.clone();
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(RequestInfo {
            id: uuid::Uuid::now_v7().to_string(),
            client: peer,
            tls,
            started: Instant::now(),
            client_cert: client_cert.clone(),
        });
        let req = http::Request::from_parts(parts, body.map_err(BoxError::from).boxed_unsync());
        async move {
            let mut response = service.call(req).await?;
            if tls {
                // Browsers that reached this listener over TLS never fall
                // back to plain HTTP for it (sign-in pages, the dashboard).
                response
                    .headers_mut()
                    .entry(http::header::STRICT_TRANSPORT_SECURITY)
                    .or_insert(http::HeaderValue::from_static(HSTS));
            }
            Ok::<_, Infallible>(response.map(|body| InFlightBody {
                inner: body,
                _guard: guard,
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.saturating_mul(2).max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(options.max_header_bytes.saturating_mul(2).max(8192) as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let conn = builder.serve_connection(TokioIo::new(io), hyper_service);
    tokio::pin!(conn);
    let idle_ms = options.idle_timeout.as_millis().max(1) as u64;
    let mut idle_check =
        tokio::time::interval(options.idle_timeout.max(Duration::from_millis(10)) / 2);
    idle_check.tick().await;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed() => break,
            _ = idle_check.tick() => {
                if activity.idle_ms() >= idle_ms {
                    tracing::debug!(client = %peer, "idle connection closed");
                    break;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
