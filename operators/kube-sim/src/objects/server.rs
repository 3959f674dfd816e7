//! Making, configuring and serving a simulator.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::{handle, Simulator};

/// A simulator serving in the background.
pub struct Running {
    pub addr: SocketAddr,
    sim: Simulator,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// `http://127.0.0.1:PORT`, for a client's configuration.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The simulator being served (the same objects).
    pub fn simulator(&self) -> &Simulator {
        &self.sim
    }

    /// See [`Simulator::compact`].
    pub fn compact(&self) {
        self.sim.compact();
    }

    /// A kubeconfig for this server: see [`crate::kubeconfig`].
    pub fn kubeconfig(&self) -> String {
        crate::kubeconfig(&self.url())
    }

    /// Writes [`Running::kubeconfig`] to `path`: see [`crate::write_kubeconfig`].
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        crate::write_kubeconfig(path, &self.url())
    }

    /// Stops serving and waits until the server has.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.task.await.map_err(std::io::Error::other)?
    }
}

impl Simulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// A simulator that keeps only `changes` changes for watchers (tests of
    /// `410 Gone`).
    pub fn with_history(changes: usize) -> Self {
        let sim = Self::default();
        sim.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .history_limit = changes.max(1);
        sim
    }

    /// Requests served so far, by verb and resource: `"patch
    /// objectbuckets/status" → 1200`. Verbs are those of the API server's
    /// audit log (get, list, watch, create, update, patch, delete).
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn count_request(
        &self,
        method: &axum::http::Method,
        named: bool,
        plural: &str,
        status_only: bool,
        uri: &axum::http::Uri,
    ) {
        use axum::http::Method;
        let verb = match (method, named) {
            (&Method::GET, false)
                if uri
                    .query()
                    .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1")) =>
            {
                "watch"
            }
            (&Method::GET, false) => "list",
            (&Method::GET, true) => "get",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, _) => "delete",
            _ => "other",
        };
        let key = format!(
            "{verb} {plural}{}",
            if status_only { "/status" } else { "" }
        );
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Deployments and StatefulSets report their replicas ready `delay`
    /// after each new generation (created, or spec changed) instead of at
    /// once; until then none are ready. The change is an ordinary update:
    /// watchers see it.
    pub fn ready_delay(mut self, delay: std::time::Duration) -> Self {
        self.ready_delay = delay;
        self
    }

    /// The HTTP router.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .fallback(handle)
            .with_state(self.clone())
    }

    /// Serves on `addr` (port 0 picks one) until `stop` resolves; returns the bound address at once.
    /// Serves on a free port of 127.0.0.1 until [`Running::stop`]: the usual
    /// way for a test to have an API server of its own.
    pub async fn start(self) -> std::io::Result<Running> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let sim = self.clone();
        let (addr, task) = self
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)), async {
                let _ = stopped.await;
            })
            .await?;
        Ok(Running {
            addr,
            sim,
            stop,
            task,
        })
    }

    pub async fn serve(
        self,
        addr: SocketAddr,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = self.router();
        let sim = self.clone();
        let stop = async move {
            stop.await;
            // Open watches would hold a graceful stop until their timeouts.
            sim.end_watches();
        };
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        });
        Ok((bound, task))
    }
}
