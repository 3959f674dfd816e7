//! `ndc-kube-sim`: run the Kubernetes API simulator.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// A Kubernetes API simulator for tests and `ndc up` (not a Kubernetes distribution).
#[derive(Parser, Debug)]
#[command(
    name = "ndc-kube-sim",
    version,
    about,
    after_help = "Example:\n  ndc-kube-sim --listen 127.0.0.1:0 --kubeconfig /tmp/sim.kubeconfig &\n  kubectl --kubeconfig /tmp/sim.kubeconfig get namespaces"
)]
struct Args {
    /// Address to serve on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Once listening, write a kubeconfig for this server here (written
    /// atomically: its appearance means the server is ready).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Milliseconds before simulated Deployments and StatefulSets report
    /// their replicas ready after each new generation (0: at once).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    ready_delay_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let (addr, task) = ndc_kube_sim::Simulator::new()
        .ready_delay(std::time::Duration::from_millis(args.ready_delay_ms))
        .serve(args.listen, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let url = format!("http://{addr}");
    if let Some(path) = &args.kubeconfig {
        ndc_kube_sim::write_kubeconfig(path, &url)
            .map_err(|e| anyhow::anyhow!("writing the kubeconfig {}: {e}", path.display()))?;
    }
    println!("Kubernetes API simulator at {url}");
    task.await??;
    Ok(())
}
