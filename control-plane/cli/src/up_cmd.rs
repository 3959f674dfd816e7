//! `ndc up`: ndc's main job on embedded defaults. For now it runs the
//! replicated control plane as a one-node cluster in a local data dir; the
//! operators, the Kubernetes simulator and the national samples join it as
//! their issues land.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ndc_api::kv::kv_client::KvClient;
use ndc_api::kv::{GetRequest, PutRequest};
use ndc_server::NodeConfig;

use crate::output::CliError;
use crate::server_cmd::shutdown_signal;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  ndc up\n  ndc up --data-dir /tmp/ndc --listen 127.0.0.1:0 --check"
)]
pub struct UpArgs {
    /// Where the control plane keeps its data.
    #[arg(long, env = "NDC_DATA_DIR", default_value = "ndc-data")]
    pub data_dir: PathBuf,
    /// gRPC address of the control plane.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Bring everything up, check that a write is replicated and read back, then stop.
    #[arg(long)]
    pub check: bool,
}

pub async fn run(args: UpArgs) -> Result<(), CliError> {
    let mut config = NodeConfig::new(1, args.listen, args.data_dir.join("node-1"));
    config.init = true;
    eprintln!(
        "[1/3] starting the control plane in {}",
        args.data_dir.display()
    );
    let node = ndc_server::start(config)
        .await
        .context("the control plane could not start")?;
    if !node.wait_for_leader(Duration::from_secs(30)).await {
        node.shutdown().await.ok();
        return Err(CliError::Failed(anyhow::anyhow!(
            "no leader was elected within 30 s"
        )));
    }
    eprintln!(
        "[2/3] control plane ready at {} (node 1, leader)",
        node.addr
    );

    let client = ndc_api::Client::new(std::slice::from_ref(&node.addr))
        .map_err(|e| CliError::Failed(e.into()))?;
    let mut kv: KvClient<_> = client.kv();
    let put = kv
        .put(PutRequest {
            key: "/ndc/up/last-start".into(),
            value: format!("node 1 at {}", node.addr).into_bytes(),
            expected_revision: None,
        })
        .await
        .map_err(|s| crate::output::status("the first write failed", s))?
        .into_inner();
    let got = kv
        .get(GetRequest {
            key: "/ndc/up/last-start".into(),
            consistency: 0,
        })
        .await
        .map_err(|s| crate::output::status("reading back the first write failed", s))?
        .into_inner();
    if got.object.map(|o| o.mod_revision) != Some(put.revision) {
        node.shutdown().await.ok();
        return Err(CliError::Failed(anyhow::anyhow!(
            "the write at revision {} was not read back",
            put.revision
        )));
    }
    eprintln!(
        "[3/3] write and linearizable read checked at revision {}",
        put.revision
    );

    if args.check {
        node.shutdown().await.context("clean shutdown failed")?;
        println!("ndc up: control plane checked and stopped cleanly");
        return Ok(());
    }
    println!(
        "ndc control plane running at {}. Try, in another terminal:",
        node.addr
    );
    println!("  ndc --endpoints {} cluster status", node.addr);
    println!("  ndc --endpoints {} put /demo/hello world", node.addr);
    println!("  ndc --endpoints {} list /", node.addr);
    println!("Press Ctrl-C to stop.");
    shutdown_signal().await;
    node.shutdown().await.context("clean shutdown failed")?;
    Ok(())
}
