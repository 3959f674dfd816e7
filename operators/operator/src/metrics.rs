//! The operator's Prometheus metrics, in the text exposition format (no
//! metrics library), and its HTTP endpoints: `/metrics`, `/healthz` and
//! `/readyz`.
//!
//! Series:
//!
//! - `ndc_operator_reconciles_total{controller}`: reconciles run, failed or not;
//! - `ndc_operator_reconcile_failures_total{controller,error}`: reconciles that failed, by error kind;
//! - `ndc_operator_reconcile_duration_seconds{controller}`: a histogram of reconcile durations;
//! - `ndc_operator_leader`: 1 while this replica holds the leader lease.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The upper bounds (seconds) of the duration histogram's buckets.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The operator's metrics; cheap to clone (the clones share the values).
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

#[derive(Default)]
struct Inner {
    reconciles: BTreeMap<String, u64>,
    failures: BTreeMap<(String, String), u64>,
    durations: BTreeMap<String, Histogram>,
    leader: bool,
}

#[derive(Default)]
struct Histogram {
    /// Observations at most each bound of [`BUCKETS`] (not cumulative).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The kind of a reconcile error, as the `error` label has it; `None` for
/// [`crate::Error::Waiting`], which is not a failure.
pub fn error_kind(e: &crate::Error) -> Option<&'static str> {
    match e {
        crate::Error::Kube(kube::Error::Api(s)) if s.code == 409 => Some("kube_conflict"),
        crate::Error::Kube(kube::Error::Api(s)) if s.is_not_found() => Some("kube_not_found"),
        crate::Error::Kube(kube::Error::Api(_)) => Some("kube_api"),
        crate::Error::Kube(_) => Some("kube"),
        crate::Error::ControlPlane(_) => Some("control_plane"),
        crate::Error::Waiting(_) => None,
        crate::Error::Other(_) => Some("other"),
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One reconcile by `controller` ran (failed or not), taking `duration`.
    pub fn reconciled(&self, controller: &str, duration: Duration) {
        let secs = duration.as_secs_f64();
        let mut inner = self.lock();
        *inner.reconciles.entry(controller.to_string()).or_default() += 1;
        let h = inner.durations.entry(controller.to_string()).or_default();
        h.count += 1;
        h.sum += secs;
        if let Some(i) = BUCKETS.iter().position(|le| secs <= *le) {
            h.buckets[i] += 1;
        }
    }

    /// One reconcile by `controller` failed with an error of `kind`.
    pub fn failed(&self, controller: &str, kind: &str) {
        *self
            .lock()
            .failures
            .entry((controller.to_string(), kind.to_string()))
            .or_default() += 1;
    }

    /// Records a reconcile's outcome: [`Metrics::reconciled`], and
    /// [`Metrics::failed`] with [`error_kind`] when it failed.
    pub fn observe<T>(
        &self,
        controller: &str,
        duration: Duration,
        result: &Result<T, crate::Error>,
    ) {
        self.reconciled(controller, duration);
        if let Err(e) = result {
            if let Some(kind) = error_kind(e) {
                self.failed(controller, kind);
            }
        }
    }

    /// Whether this replica holds the leader lease.
    pub fn set_leader(&self, leading: bool) {
        self.lock().leader = leading;
    }

    /// Reconciles run by `controller` so far.
    pub fn reconciles(&self, controller: &str) -> u64 {
        self.lock().reconciles.get(controller).copied().unwrap_or(0)
    }

    /// Reconciles run so far, by controller.
    pub fn all_reconciles(&self) -> BTreeMap<String, u64> {
        self.lock().reconciles.clone()
    }

    /// Failures of `controller` with an error of `kind` so far.
    pub fn failures(&self, controller: &str, kind: &str) -> u64 {
        self.lock()
            .failures
            .get(&(controller.to_string(), kind.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Every series in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        family(
            &mut out,
            "ndc_operator_reconciles_total",
            "Reconciles run (failed or not), by controller.",
            "counter",
        );
        for (controller, n) in &inner.reconciles {
            let _ = writeln!(
                out,
                "ndc_operator_reconciles_total{{controller=\"{}\"}} {n}",
                escape_label(controller)
            );
        }
        family(
            &mut out,
            "ndc_operator_reconcile_failures_total",
            "Reconciles that failed, by controller and error kind.",
            "counter",
        );
        for ((controller, kind), n) in &inner.failures {
            let _ = writeln!(
                out,
                "ndc_operator_reconcile_failures_total{{controller=\"{}\",error=\"{}\"}} {n}",
                escape_label(controller),
                escape_label(kind)
            );
        }
        let name = "ndc_operator_reconcile_duration_seconds";
        family(
            &mut out,
            name,
            "How long reconciles took, by controller.",
            "histogram",
        );
        for (controller, h) in &inner.durations {
            let c = escape_label(controller);
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "{name}_bucket{{controller=\"{c}\",le=\"{}\"}} {cumulative}",
                    float(*le)
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{controller=\"{c}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "{name}_sum{{controller=\"{c}\"}} {}", float(h.sum));
            let _ = writeln!(out, "{name}_count{{controller=\"{c}\"}} {}", h.count);
        }
        family(
            &mut out,
            "ndc_operator_leader",
            "Whether this replica holds the leader lease (1) or not (0).",
            "gauge",
        );
        let _ = writeln!(out, "ndc_operator_leader {}", u8::from(inner.leader));
        out
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A float as Prometheus reads it.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// A label value: backslash, double quote and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A `# HELP` text: backslash and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[derive(Clone)]
struct Served {
    metrics: Metrics,
    ready: watch::Receiver<bool>,
}

async fn metrics_page(State(s): State<Served>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], s.metrics.render())
}

async fn healthz() -> impl IntoResponse {
    "ok\n"
}

async fn readyz(State(s): State<Served>) -> impl IntoResponse {
    if *s.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves `GET /metrics`, `GET /healthz` (200 while serving) and
/// `GET /readyz` (200 while `ready` holds true, 503 otherwise) on `addr`.
/// Returns the address bound (port 0 picks one) and the serving task;
/// abort it to stop serving.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    ready: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Served { metrics, ready });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(addr = %bound, error = %e, "the metrics server stopped");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    Ok((bound, task))
}
