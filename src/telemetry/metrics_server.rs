//! The metrics endpoint (`--metrics-bind-address`): `/metrics` in the OpenMetrics text
//! format, served by hyper.
//!
//! With `--metrics-secure` (the default) it is HTTPS (rustls; the certificate from
//! `--metrics-cert-path`, else a self-signed one made at start), and every scrape must carry a
//! bearer token that the API server authenticates (TokenReview) and authorizes
//! (SubjectAccessReview: `get` on the non-resource URL `/metrics`), as controller-runtime's
//! `WithAuthenticationAndAuthorization` does: no token 401, a token not allowed 403. Answers
//! are cached per token for a short while (allowed 60 s, refused 10 s) so a scrape every few
//! seconds costs no API round trip, and what unknown tokens may cost is bounded
//! ([`crate::telemetry::reviews`]: 429 past the review rations). Without `--metrics-secure` it is
//! plain HTTP without authentication, for a sidecar or a port-forward.
//!
//! HTTP/2 is offered (ALPN `h2`) only with `--enable-http2`. Bounds: at most
//! [`MAX_CONNECTIONS`] at once, the request head within 5 s, a connection at most 30 s.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::telemetry::metrics::Metrics;
use crate::telemetry::reviews::{Decision, ReviewLedger, Verdict, plausible};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsServerError {
    /// The address could not be bound.
    #[error("binding --metrics-bind-address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The certificate or key in `--metrics-cert-path` could not be read.
    #[error("reading the metrics certificate {path}: {message}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the certificate, or a self-signed one could not be made.
    #[error("setting up TLS for the metrics server: {0}")]
    Tls(String),
}

impl MetricsServerError {
    /// A stable label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Bind { .. } => "MetricsBindFailed",
            Self::Certificate { .. } => "MetricsCertificateUnreadable",
            Self::Tls(_) => "MetricsTLSFailed",
        }
    }
}

/// How the endpoint is served.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where.
    pub addr: SocketAddr,
    /// HTTPS with TokenReview and SubjectAccessReview.
    pub secure: bool,
    /// `--metrics-cert-path` (empty: self-signed), with the file names in it.
    pub cert_dir: PathBuf,
    /// `--metrics-cert-name`.
    pub cert_name: String,
    /// `--metrics-cert-key`.
    pub key_name: String,
    /// Offer HTTP/2.
    pub http2: bool,
}

/// The TLS settings: the given certificate, or a self-signed one.
pub fn tls_config(options: &Options) -> Result<rustls::ServerConfig, MetricsServerError> {
    let (certs, key) = if options.cert_dir.as_os_str().is_empty() {
        self_signed()?
    } else {
        read_pair(
            &options.cert_dir.join(&options.cert_name),
            &options.cert_dir.join(&options.key_name),
        )?
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MetricsServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| MetricsServerError::Tls(e.to_string()))?;
    config.alpn_protocols = if options.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn read_pair(cert: &Path, key: &Path) -> Result<Pair, MetricsServerError> {
    let unreadable = |path: &Path, e: &dyn std::fmt::Display| MetricsServerError::Certificate {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| unreadable(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(cert, &e))?;
    if certs.is_empty() {
        return Err(unreadable(cert, &"no PEM certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| unreadable(key, &e))?;
    Ok((certs, key))
}

fn self_signed() -> Result<Pair, MetricsServerError> {
    let mut names = vec!["localhost".to_owned()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(host.trim().to_owned());
    }
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| MetricsServerError::Tls(e.to_string()))?;
    let key = PrivateKeyDer::try_from(made.signing_key.serialize_der())
        .map_err(|e| MetricsServerError::Tls(e.to_owned()))?;
    Ok((vec![made.cert.der().clone()], key))
}

/// Too many token reviews right now: the scrape gets 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Asks the API server about bearer tokens, with a short cache and rationed reviews.
#[derive(Clone)]
pub struct Authorizer {
    client: kube::Client,
    ledger: Arc<Mutex<ReviewLedger>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

impl Authorizer {
    /// With a client allowed to create TokenReviews and SubjectAccessReviews.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            ledger: Arc::new(Mutex::new(ReviewLedger::new(Instant::now()))),
        }
    }

    /// The verdict on `token` sent from `source` (cached by its SHA-256, never by the token
    /// itself), or [`Busy`] when reviews are rationed.
    pub async fn verdict(&self, token: &str, source: IpAddr) -> Result<Verdict, Busy> {
        if !plausible(token) {
            return Ok(Verdict::Unauthenticated);
        }
        let digest = crate::hash::sha256_hex(token.as_bytes());
        let decision = self
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .decide(&digest, source, Instant::now());
        match decision {
            Decision::Known(verdict) => return Ok(verdict),
            Decision::Busy => return Err(Busy),
            Decision::Review => {}
        }
        let verdict = match self.ask(token).await {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "metrics: the API server could not review a scrape's token");
                // Not cached: the next scrape asks again.
                return Ok(Verdict::Unauthenticated);
            }
        };
        self.ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(digest, verdict, Instant::now());
        Ok(verdict)
    }

    async fn ask(&self, token: &str) -> Result<Verdict, kube::Error> {
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = reviews.create(&PostParams::default(), &review).await?;
        let status = reviewed.status.unwrap_or_default();
        let (true, Some(user)) = (status.authenticated.unwrap_or(false), status.user) else {
            return Ok(Verdict::Unauthenticated);
        };
        let access: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".into()),
                    verb: Some("get".into()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answered = access.create(&PostParams::default(), &sar).await?;
        let allowed = answered.status.is_some_and(|s| s.allowed);
        debug!(
            user = user.username.as_deref().unwrap_or(""),
            allowed, "metrics scrape reviewed"
        );
        Ok(if allowed {
            Verdict::Allowed
        } else {
            Verdict::Forbidden
        })
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer(request: &Request<Incoming>) -> Option<&str> {
    let value = request
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

async fn answer(
    request: Request<Incoming>,
    source: IpAddr,
    metrics: Metrics,
    authorizer: Option<Authorizer>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = "text/plain; charset=utf-8";
    if request.uri().path() != "/metrics" {
        return Ok(reply(StatusCode::NOT_FOUND, text, "not found\n".into()));
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "only GET\n".into(),
        ));
    }
    if let Some(authorizer) = authorizer {
        let Some(token) = bearer(&request) else {
            return Ok(reply(
                StatusCode::UNAUTHORIZED,
                text,
                "Unauthorized: a bearer token is required\n".into(),
            ));
        };
        match authorizer.verdict(token, source).await {
            Err(Busy) => {
                let mut busy = reply(
                    StatusCode::TOO_MANY_REQUESTS,
                    text,
                    "Too many token reviews; try again shortly\n".into(),
                );
                busy.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    hyper::header::HeaderValue::from_static("1"),
                );
                return Ok(busy);
            }
            Ok(Verdict::Allowed) => {}
            Ok(Verdict::Unauthenticated) => {
                return Ok(reply(
                    StatusCode::UNAUTHORIZED,
                    text,
                    "Unauthorized\n".into(),
                ));
            }
            Ok(Verdict::Forbidden) => {
                return Ok(reply(
                    StatusCode::FORBIDDEN,
                    text,
                    "Forbidden: get on /metrics is not allowed for this identity\n".into(),
                ));
            }
        }
    }
    Ok(reply(StatusCode::OK, OPENMETRICS, metrics.encode()))
}

/// Binds the address and makes the TLS settings (errors surface at start, not at scrape).
pub async fn bind(
    options: &Options,
) -> Result<(TcpListener, Option<tokio_rustls::TlsAcceptor>), MetricsServerError> {
    let tls = if options.secure {
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(
            options,
        )?)))
    } else {
        None
    };
    let listener =
        TcpListener::bind(options.addr)
            .await
            .map_err(|source| MetricsServerError::Bind {
                addr: options.addr,
                source,
            })?;
    info!(
        addr = %listener.local_addr().unwrap_or(options.addr),
        secure = options.secure,
        http2 = options.http2,
        "serving metrics"
    );
    Ok((listener, tls))
}

/// Serves `/metrics` until the task is dropped. `authorizer` is `Some` in secure mode.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: Metrics,
    authorizer: Option<Authorizer>,
    http2: bool,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Over the bound: closed at once.
            continue;
        };
        let tls = tls.clone();
        let metrics = metrics.clone();
        let authorizer = authorizer.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                answer(request, peer.ip(), metrics.clone(), authorizer.clone())
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .max_buf_size(16 * 1024);
            let builder = if http2 { builder } else { builder.http1_only() };
            let serve = async {
                match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Err(e) => debug!(error = %e, "metrics: TLS handshake failed"),
                    },
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(30), serve).await;
        });
    }
}
