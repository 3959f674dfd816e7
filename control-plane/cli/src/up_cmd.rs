//! `ndc up`: ndc's main job on embedded defaults. For now it runs the
//! replicated control plane as a one-node cluster in a local data dir; the
//! operators, the Kubernetes simulator and the national samples join it as
//! their issues land.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
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

/// The operator token of this data dir: read from `operator.token`, or made
/// (with the auth file that admits it) on the first start.
fn random_hex() -> Result<String, CliError> {
    use std::io::Read;
    let mut raw = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|e| CliError::Failed(anyhow::anyhow!(e).context("cannot read /dev/urandom")))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

fn operator_token(data_dir: &std::path::Path) -> Result<(String, std::path::PathBuf), CliError> {
    let token_file = data_dir.join("operator.token");
    let auth_file = data_dir.join("auth.yaml");
    let io = |what: &str, e: std::io::Error| {
        CliError::Failed(anyhow::anyhow!(e).context(format!("cannot {what}")))
    };
    std::fs::create_dir_all(data_dir).map_err(|e| io("create the data dir", e))?;
    if let (Ok(t), true) = (std::fs::read_to_string(&token_file), auth_file.exists()) {
        return Ok((t.trim().to_string(), auth_file));
    }
    let token = random_hex()?;
    let yaml = format!(
        "# Made by `ndc up`: one operator for this local control plane.\nusers:\n  - name: local-operator\n    token_sha256: \"{}\"\n    roles: [dc-operator]\n",
        ndc_server::auth::sha256_hex(&token)
    );
    std::fs::write(&auth_file, yaml).map_err(|e| io("write auth.yaml", e))?;
    write_private(&token_file, &token).map_err(|e| io("write operator.token", e))?;
    Ok((token, auth_file))
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(text.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, text)
    }
}

pub async fn run(args: UpArgs) -> Result<(), CliError> {
    let (token, auth_file) = operator_token(&args.data_dir)?;
    let mut config = NodeConfig::new(1, args.listen, args.data_dir.join("node-1"));
    config.init = true;
    config.auth =
        ndc_server::Auth::load(&auth_file).map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
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
    if node
        .refresh_own_address()
        .await
        .context("cannot record the node's new address")?
    {
        eprintln!(
            "      (the data dir was last served on another address; now {})",
            node.addr
        );
    }
    eprintln!(
        "[2/3] control plane ready at {} (node 1, leader)",
        node.addr
    );

    let conn = crate::output::Conn {
        endpoints: vec![node.addr.clone()],
        token: Some(token.clone()),
    };
    let client = crate::output::client(&conn).await?;
    // The root of the hierarchy: the national level, which the data centre serves.
    let root = match crate::tenant_cmd::get(&client, ROOT_ID).await? {
        Some(t) => t,
        None => {
            let spec = ndc_tenants::TenantSpec {
                id: ROOT_ID.into(),
                display_name: "Cộng hòa Xã hội Chủ nghĩa Việt Nam".into(),
                level: ndc_tenants::Level::Central,
                branch: ndc_tenants::Branch::State,
                parent: None,
                admin_code: None,
                security_level: 4,
                labels: Default::default(),
                quota: ROOT_QUOTA,
                deletion_protection: true,
            };
            crate::tenant_cmd::create(&client, spec, Some("ndc up: the national root".into()))
                .await?
        }
    };
    let again = crate::tenant_cmd::get(&client, ROOT_ID).await?;
    if again.as_ref() != Some(&root) {
        node.shutdown().await.ok();
        return Err(CliError::Failed(anyhow::anyhow!(
            "the root tenant was not read back as written"
        )));
    }
    eprintln!("[3/3] root tenant {ROOT_ID} in place; write and linearizable read checked");

    if args.check {
        node.shutdown().await.context("clean shutdown failed")?;
        println!("ndc up: control plane checked and stopped cleanly");
        return Ok(());
    }
    let token_path = args.data_dir.join("operator.token");
    println!(
        "ndc control plane running at {}. In another terminal:",
        node.addr
    );
    println!(
        "  export NDC_ENDPOINTS={} NDC_TOKEN=$(cat {})",
        node.addr,
        token_path.display()
    );
    println!("  ndc cluster status");
    println!("  ndc tenant tree");
    println!("  ndc audit verify");
    println!("Press Ctrl-C to stop.");
    shutdown_signal().await;
    node.shutdown().await.context("clean shutdown failed")?;
    Ok(())
}

const ROOT_ID: &str = "vn";

/// The root's quota stands for the data centre's first site until node
/// agents report real capacity: 1,300 racks is far more; this is what the
/// samples hand out.
const ROOT_QUOTA: ndc_tenants::Quota = ndc_tenants::Quota {
    cpu_millis: 100_000_000,
    memory_bytes: 400 << 40,
    storage_bytes: 50 << 50,
    buckets: 100_000,
    databases: 50_000,
    namespaces: 50_000,
};
