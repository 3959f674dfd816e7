//! `ndc-bench store`: the same workload against a 3-node ndc cluster and a
//! 3-node etcd cluster, in one run, on this machine.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ndc_api::cluster::cluster_client::ClusterClient;
use ndc_api::cluster::StatusRequest;
use ndc_api::kv::kv_client::KvClient;
use ndc_api::kv::{Consistency, GetRequest, PutRequest};
use tonic::transport::Channel;

use crate::procs;
use crate::stats::{figures, Figures};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  ndc-bench store\n  ndc-bench store --puts 1000 --gets 1000 --json store.json"
)]
pub struct StoreArgs {
    /// Puts per write case.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub puts: u64,
    /// Gets in the read case.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub gets: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// The ndc binary (default: beside ndc-bench, then PATH).
    #[arg(long)]
    pub ndc_bin: Option<PathBuf>,
    /// The etcd binary (Debian package etcd-server).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// Measure ndc only.
    #[arg(long)]
    pub no_etcd: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One benchmark case.
#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    write: bool,
    clients: usize,
}

const CASES: [Case; 4] = [
    Case {
        name: "put, 1 client",
        write: true,
        clients: 1,
    },
    Case {
        name: "put, 16 clients",
        write: true,
        clients: 16,
    },
    Case {
        name: "put, 64 clients",
        write: true,
        clients: 64,
    },
    Case {
        name: "linearizable get, 64 clients",
        write: false,
        clients: 64,
    },
];

/// Connections opened per system: clients share them, as HTTP/2 allows.
const CONNECTIONS: usize = 8;

#[derive(Clone)]
enum Conn {
    Ndc(KvClient<Channel>),
    Etcd(Box<etcd_client::KvClient>),
}

impl Conn {
    async fn put(&mut self, key: String, value: Vec<u8>) -> Result<()> {
        match self {
            Conn::Ndc(c) => {
                c.put(PutRequest {
                    key,
                    value,
                    expected_revision: None,
                })
                .await?;
            }
            Conn::Etcd(c) => {
                c.put(key, value, None).await?;
            }
        }
        Ok(())
    }

    async fn get(&mut self, key: String) -> Result<()> {
        match self {
            Conn::Ndc(c) => {
                let r = c
                    .get(GetRequest {
                        key,
                        consistency: Consistency::Linearizable as i32,
                    })
                    .await?
                    .into_inner();
                if r.object.is_none() {
                    bail!("a key written earlier was not found");
                }
            }
            Conn::Etcd(c) => {
                let r = c.get(key, None).await?;
                if r.kvs().is_empty() {
                    bail!("a key written earlier was not found");
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, serde::Serialize)]
struct Row {
    case: &'static str,
    ndc: Figures,
    etcd: Option<Figures>,
}

async fn run_case(
    system: &str,
    conns: &[Conn],
    case: Case,
    ops: u64,
    value_size: usize,
) -> Result<Figures> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..case.clients {
        let mut conn = conns[client % conns.len()].clone();
        let mine: Vec<u64> = (0..ops)
            .filter(|i| (*i as usize) % case.clients == client)
            .collect();
        let write = case.write;
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(mine.len());
            let mut errors = 0usize;
            for i in mine {
                // Reads go over the keys the 1-client case wrote.
                let key = format!("/bench/{}/{i:08}", if write { case.clients } else { 1 });
                let t = Instant::now();
                let res = if write {
                    conn.put(key, vec![b'v'; value_size]).await
                } else {
                    conn.get(key).await
                };
                match res {
                    Ok(()) => samples.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (samples, errors)
        }));
    }
    let mut samples = Vec::with_capacity(ops as usize);
    let mut errors = 0;
    for t in tasks {
        let (s, e) = t.await?;
        samples.extend(s);
        errors += e;
    }
    let f = figures(samples, errors, started.elapsed());
    eprintln!(
        "  {system:<4} {:<30} {:>9.0} ops/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} errors)",
        case.name, f.ops_per_sec, f.p50_ms, f.p99_ms, f.errors
    );
    Ok(f)
}

async fn ndc_conns(addrs: &[String]) -> Result<Vec<Conn>> {
    let mut leader = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while leader.is_none() {
        for a in addrs {
            if let Ok(s) = ClusterClient::new(ndc_api::client::channel(a)?)
                .status(StatusRequest {})
                .await
            {
                let s = s.into_inner();
                if s.state == "leader"
                    && s.members.iter().filter(|m| m.voter).count() == 3
                    && !s.joint
                {
                    leader = Some(a.clone());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("the ndc cluster elected no leader with 3 voters");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = leader.context("leader")?;
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        // Separate channels are separate HTTP/2 connections.
        let ch = tonic::transport::Endpoint::from_shared(ndc_api::client::endpoint_uri(&leader))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        conns.push(Conn::Ndc(KvClient::new(ch)));
    }
    Ok(conns)
}

async fn etcd_conns(urls: &[String]) -> Result<Vec<Conn>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut leader_url = None;
        for u in urls {
            let Ok(mut c) = etcd_client::Client::connect([u.as_str()], None).await else {
                continue;
            };
            let Ok(s) = c.status().await else { continue };
            let me = s.header().map(|h| h.member_id()).unwrap_or(0);
            if s.leader() != 0 && s.leader() == me {
                leader_url = Some(u.clone());
            }
        }
        if let Some(u) = leader_url {
            let mut conns = Vec::new();
            for _ in 0..CONNECTIONS {
                conns.push(Conn::Etcd(Box::new(
                    etcd_client::Client::connect([u.as_str()], None)
                        .await?
                        .kv_client(),
                )));
            }
            return Ok(conns);
        }
        if Instant::now() > deadline {
            bail!("the etcd cluster elected no leader");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn measure(system: &str, conns: &[Conn], args: &StoreArgs) -> Result<Vec<Figures>> {
    let mut out = Vec::new();
    for case in CASES {
        let ops = if case.write {
            args.puts
        } else {
            args.gets.min(args.puts)
        };
        let f = run_case(system, conns, case, ops, args.value_size).await?;
        if f.errors > 0 {
            bail!(
                "{system}: {} of {ops} operations failed in case {:?}",
                f.errors,
                case.name
            );
        }
        out.push(f);
    }
    Ok(out)
}

pub async fn run(args: StoreArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ndc = procs::find_ndc(args.ndc_bin.clone())?;
    eprintln!(
        "ndc-bench store: {} puts per write case, {} gets, {}-byte values, working in {}",
        args.puts,
        args.gets.min(args.puts),
        args.value_size,
        dir.path().display()
    );

    eprintln!("[1/2] ndc: 3 nodes on 127.0.0.1 ({})", ndc.display());
    let ndc_figures = {
        let (_procs, addrs) = procs::ndc_cluster(&ndc, dir.path()).await?;
        let conns = ndc_conns(&addrs).await?;
        measure("ndc", &conns, &args).await?
    };

    let etcd_figures = if args.no_etcd {
        None
    } else {
        eprintln!(
            "[2/2] etcd: 3 nodes on 127.0.0.1 ({})",
            args.etcd_bin.display()
        );
        let (_procs, urls) = procs::etcd_cluster(&args.etcd_bin, dir.path()).await?;
        let conns = etcd_conns(&urls).await?;
        Some(measure("etcd", &conns, &args).await?)
    };

    let rows: Vec<Row> = CASES
        .iter()
        .enumerate()
        .map(|(i, c)| Row {
            case: c.name,
            ndc: ndc_figures[i].clone(),
            etcd: etcd_figures.as_ref().map(|e| e[i].clone()),
        })
        .collect();
    println!();
    println!("| case | ndc ops/s | ndc p50 ms | ndc p99 ms | etcd ops/s | etcd p50 ms | etcd p99 ms | ndc/etcd ops/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let (eo, e50, e99, ratio) = match &r.etcd {
            Some(e) => (
                format!("{:.0}", e.ops_per_sec),
                format!("{:.2}", e.p50_ms),
                format!("{:.2}", e.p99_ms),
                if e.ops_per_sec > 0.0 {
                    format!("{:.2}", r.ndc.ops_per_sec / e.ops_per_sec)
                } else {
                    "-".into()
                },
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {eo} | {e50} | {e99} | {ratio} |",
            r.case, r.ndc.ops_per_sec, r.ndc.p50_ms, r.ndc.p99_ms
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
