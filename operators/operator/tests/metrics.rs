//! The metrics text and the HTTP endpoints, fetched with a bare HTTP/1.1
//! client over a TCP stream.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use ndc_operator::metrics::{self, Metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(10);

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

/// `GET path` with `Connection: close`; the reply read to its end.
async fn get(addr: SocketAddr, path: &str) -> Result<Reply> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut raw))
        .await
        .context("no reply in time")??;
    let text = String::from_utf8(raw)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .context("no status code")?
        .parse()?;
    let headers = headers.to_ascii_lowercase();
    if headers.contains("transfer-encoding: chunked") {
        bail!("chunked replies are not expected: {head}");
    }
    Ok(Reply {
        status,
        headers,
        body: body.to_string(),
    })
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn render_counts_failures_and_durations() {
    let m = Metrics::new();
    m.reconciled("tenants", Duration::from_millis(3));
    m.reconciled("tenants", Duration::from_millis(40));
    m.reconciled("tenants", Duration::from_secs(20));
    m.reconciled("buckets", Duration::from_millis(200));
    m.failed("tenants", "kube_conflict");
    m.failed("tenants", "kube_conflict");
    m.failed("buckets", "control_plane");
    m.set_leader(true);
    assert_eq!(m.reconciles("tenants"), 3);
    assert_eq!(m.failures("tenants", "kube_conflict"), 2);

    let text = m.render();
    let l = lines(&text);
    for want in [
        "# HELP ndc_operator_reconciles_total Reconciles run (failed or not), by controller.",
        "# TYPE ndc_operator_reconciles_total counter",
        "ndc_operator_reconciles_total{controller=\"buckets\"} 1",
        "ndc_operator_reconciles_total{controller=\"tenants\"} 3",
        "# TYPE ndc_operator_reconcile_failures_total counter",
        "ndc_operator_reconcile_failures_total{controller=\"buckets\",error=\"control_plane\"} 1",
        "ndc_operator_reconcile_failures_total{controller=\"tenants\",error=\"kube_conflict\"} 2",
        "# TYPE ndc_operator_reconcile_duration_seconds histogram",
        "ndc_operator_reconcile_duration_seconds_bucket{controller=\"tenants\",le=\"0.005\"} 1",
        "ndc_operator_reconcile_duration_seconds_bucket{controller=\"tenants\",le=\"0.025\"} 1",
        "ndc_operator_reconcile_duration_seconds_bucket{controller=\"tenants\",le=\"0.05\"} 2",
        "ndc_operator_reconcile_duration_seconds_bucket{controller=\"tenants\",le=\"10\"} 2",
        "ndc_operator_reconcile_duration_seconds_bucket{controller=\"tenants\",le=\"+Inf\"} 3",
        "ndc_operator_reconcile_duration_seconds_count{controller=\"tenants\"} 3",
        "ndc_operator_reconcile_duration_seconds_bucket{controller=\"buckets\",le=\"0.1\"} 0",
        "ndc_operator_reconcile_duration_seconds_bucket{controller=\"buckets\",le=\"0.25\"} 1",
        "ndc_operator_reconcile_duration_seconds_sum{controller=\"buckets\"} 0.2",
        "ndc_operator_reconcile_duration_seconds_count{controller=\"buckets\"} 1",
        "# TYPE ndc_operator_leader gauge",
        "ndc_operator_leader 1",
    ] {
        assert!(l.contains(&want), "missing {want:?} in:\n{text}");
    }
    // The sum of 3 ms + 40 ms + 20 s.
    let sum: f64 = l
        .iter()
        .find_map(|x| {
            x.strip_prefix("ndc_operator_reconcile_duration_seconds_sum{controller=\"tenants\"} ")
        })
        .expect("a tenants sum")
        .parse()
        .expect("a number");
    assert!((sum - 20.043).abs() < 1e-9, "{sum}");
    // Every bucket line is cumulative: never less than the one before.
    let mut last = 0u64;
    for x in l.iter().filter(|x| {
        x.starts_with("ndc_operator_reconcile_duration_seconds_bucket{controller=\"tenants\"")
    }) {
        let n: u64 = x
            .rsplit(' ')
            .next()
            .expect("a value")
            .parse()
            .expect("a count");
        assert!(n >= last, "{x}");
        last = n;
    }
    // Each family is declared once, before its samples.
    assert_eq!(
        l.iter().filter(|x| x.starts_with("# TYPE ")).count(),
        4,
        "{text}"
    );
    assert!(text.ends_with('\n'));
}

#[test]
fn empty_metrics_still_declare_their_families() {
    let text = Metrics::new().render();
    assert!(text.contains("# TYPE ndc_operator_reconciles_total counter\n"));
    assert!(text.contains("\nndc_operator_leader 0\n"));
    assert!(!text.contains("controller="));
}

#[test]
fn label_values_are_escaped() {
    let m = Metrics::new();
    m.failed("we\"ird\\name\nhere", "k\"ind");
    let text = m.render();
    assert!(
        text.contains(
            "ndc_operator_reconcile_failures_total{controller=\"we\\\"ird\\\\name\\nhere\",error=\"k\\\"ind\"} 1\n"
        ),
        "{text}"
    );
    // No raw newline sneaks into a sample line.
    assert!(text
        .lines()
        .all(|x| x.starts_with('#') || x.starts_with("ndc_operator_")));
    assert_eq!(metrics::escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
}

#[test]
fn observe_classifies_outcomes() {
    let m = Metrics::new();
    let ok: Result<(), ndc_operator::Error> = Ok(());
    m.observe("claims", Duration::from_millis(1), &ok);
    let waiting: Result<(), _> = Err(ndc_operator::Error::Waiting("deleting".into()));
    m.observe("claims", Duration::from_millis(1), &waiting);
    let cp: Result<(), _> = Err(ndc_operator::Error::ControlPlane("Unavailable".into()));
    m.observe("claims", Duration::from_millis(1), &cp);
    let other: Result<(), _> = Err(ndc_operator::Error::Other("bad spec".into()));
    m.observe("claims", Duration::from_millis(1), &other);
    assert_eq!(m.reconciles("claims"), 4);
    assert_eq!(m.failures("claims", "control_plane"), 1);
    assert_eq!(m.failures("claims", "other"), 1);
    let text = m.render();
    assert!(!text.contains("waiting"), "{text}");
    assert!(text.contains(
        "ndc_operator_reconcile_failures_total{controller=\"claims\",error=\"control_plane\"} 1\n"
    ));
}

#[tokio::test]
async fn clones_share_counts_across_tasks() -> Result<()> {
    let m = Metrics::new();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move {
                for _ in 0..250 {
                    m.reconciled("tenants", Duration::from_millis(1));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    assert_eq!(m.reconciles("tenants"), 2000);
    assert!(m
        .render()
        .contains("ndc_operator_reconcile_duration_seconds_count{controller=\"tenants\"} 2000\n"));
    Ok(())
}

#[tokio::test]
async fn serves_metrics_health_and_readiness() -> Result<()> {
    let m = Metrics::new();
    let (ready_tx, ready) = watch::channel(false);
    let (addr, server) = metrics::serve("127.0.0.1:0".parse()?, m.clone(), ready).await?;
    assert_ne!(addr.port(), 0);

    let r = get(addr, "/healthz").await?;
    assert_eq!(r.status, 200);
    let r = get(addr, "/readyz").await?;
    assert_eq!(r.status, 503, "{}", r.body);

    m.reconciled("tenants", Duration::from_millis(7));
    m.reconciled("tenants", Duration::from_millis(70));
    m.failed("tenants", "kube_api");
    let r = get(addr, "/metrics").await?;
    assert_eq!(r.status, 200);
    assert!(
        r.headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.headers
    );
    let l = lines(&r.body);
    for want in [
        "ndc_operator_reconciles_total{controller=\"tenants\"} 2",
        "ndc_operator_reconcile_failures_total{controller=\"tenants\",error=\"kube_api\"} 1",
        "ndc_operator_reconcile_duration_seconds_bucket{controller=\"tenants\",le=\"0.01\"} 1",
        "ndc_operator_reconcile_duration_seconds_bucket{controller=\"tenants\",le=\"0.1\"} 2",
        "ndc_operator_reconcile_duration_seconds_count{controller=\"tenants\"} 2",
    ] {
        assert!(l.contains(&want), "missing {want:?} in:\n{}", r.body);
    }
    // Later counts show on the next scrape.
    m.reconciled("tenants", Duration::from_millis(1));
    let r = get(addr, "/metrics").await?;
    assert!(r
        .body
        .contains("ndc_operator_reconciles_total{controller=\"tenants\"} 3\n"));

    // Ready flips to 200, and back.
    ready_tx.send_replace(true);
    assert_eq!(get(addr, "/readyz").await?.status, 200);
    ready_tx.send_replace(false);
    assert_eq!(get(addr, "/readyz").await?.status, 503);
    assert_eq!(get(addr, "/nope").await?.status, 404);

    // Stopped: the port no longer answers.
    server.abort();
    let _ = server.await;
    let until = Instant::now() + DEADLINE;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < until,
            "still serving after the task was aborted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn binding_a_taken_address_fails() -> Result<()> {
    let (ready_tx, ready) = watch::channel(true);
    let (addr, server) =
        metrics::serve("127.0.0.1:0".parse()?, Metrics::new(), ready.clone()).await?;
    assert!(metrics::serve(addr, Metrics::new(), ready).await.is_err());
    assert_eq!(get(addr, "/readyz").await?.status, 200);
    drop(ready_tx);
    server.abort();
    let _ = server.await;
    Ok(())
}
