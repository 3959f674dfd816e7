//! `ndc-kube-sim`: run the Kubernetes API simulator.

use std::net::SocketAddr;

use clap::Parser;

/// A Kubernetes API simulator for tests and `ndc up` (not a Kubernetes distribution).
#[derive(Parser, Debug)]
#[command(
    name = "ndc-kube-sim",
    version,
    about,
    after_help = "Example:\n  ndc-kube-sim --listen 127.0.0.1:6443 &\n  kubectl --server http://127.0.0.1:6443 get namespaces"
)]
struct Args {
    /// Address to serve on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let (addr, task) = ndc_kube_sim::Simulator::new()
        .serve(args.listen, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("Kubernetes API simulator at http://{addr}");
    task.await??;
    Ok(())
}
