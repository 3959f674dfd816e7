//! Every example in every `ndc … --help` runs, as a newcomer would type it
//! after `ndc up`, against `ndc up` with the national samples: examples
//! cannot name a service, tenant, file or flag that does not exist.
//!
//! The help is read from the binary itself (every subcommand, walking the
//! `Commands:` lists), so a new example is run without being listed here.
//! Examples that start long-running servers or need a second machine are
//! skipped, each with its reason; reorganisations run last, as they change
//! the tree the other examples use.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use support::NDC;

/// Examples not run, by how they start, and why.
const SKIPPED: &[(&str, &str)] = &[
    ("ndc up", "starts a whole installation: this test runs one"),
    (
        "ndc server",
        "starts a node that runs until stopped: the cluster tests start nodes with these flags",
    ),
    (
        "ndc cluster add",
        "needs a second node listening at the address it names",
    ),
];

/// Examples run after all the others, in this order: they change the
/// hierarchy the others are written against.
const LAST: &[&str] = &["ndc tenant merge"];

/// Examples whose documented outcome is a refusal (exit 1) when they run
/// without a terminal or against the samples' state, with why.
const MAY_BE_REFUSED: &[(&str, &str)] = &[
    (
        "--expect-revision 7",
        "a compare-and-swap: refused unless the object is at revision 7",
    ),
    (
        "ndc tenant merge ha-noi-cua-nam --into",
        "without --yes and without a terminal, a merge is shown as a plan only",
    ),
];

/// How long one example may run.
const EXAMPLE_DEADLINE: Duration = Duration::from_secs(120);
const UP_DEADLINE: Duration = Duration::from_secs(600);

fn help(path: &[String]) -> Result<String> {
    let out = Command::new(NDC)
        .args(path)
        .arg("--help")
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "ndc {} --help: {}",
            path.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The names under `Commands:` in a help text (`help` itself left out).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// The command lines under `Example:` or `Examples:`: each starts with
/// `ndc `; a line ending in `\` goes on on the next.
fn examples(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in help
        .lines()
        .skip_while(|l| !matches!(l.trim(), "Example:" | "Examples:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
    {
        let text = line.trim();
        let line = match current.take() {
            Some(mut open) => {
                open.push(' ');
                open.push_str(text);
                open
            }
            None if text.starts_with("ndc ") || text == "ndc" => text.to_string(),
            None => continue,
        };
        match line.strip_suffix('\\') {
            Some(open) => current = Some(open.trim_end().to_string()),
            None => out.push(line),
        }
    }
    out
}

/// Every example of every command, in the order `--help` lists them.
fn all_examples() -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        let text = help(&path)?;
        out.extend(examples(&text));
        for sub in subcommands(&text).into_iter().rev() {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
    }
    Ok(out)
}

fn reason<'a>(table: &'a [(&str, &str)], example: &str, starts: bool) -> Option<&'a str> {
    table
        .iter()
        .find(|(pattern, _)| {
            if starts {
                example.starts_with(pattern)
            } else {
                example.contains(pattern)
            }
        })
        .map(|(_, why)| *why)
}

struct Env {
    dir: PathBuf,
    endpoint: String,
    token: String,
    bin_dir: PathBuf,
}

/// Runs one command line with `sh`, as typed in a terminal; returns (exit
/// code, stdout and stderr).
fn run(env: &Env, line: &str) -> Result<(i32, String)> {
    // The examples name the default address; this installation has its own.
    let line = line.replace("127.0.0.1:7700", &env.endpoint);
    let path = format!(
        "{}:{}",
        env.bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = env.dir.join("example.log");
    let file = std::fs::File::create(&log)?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .current_dir(&env.dir)
        .env("PATH", path)
        .env("NDC_ENDPOINTS", &env.endpoint)
        .env("NDC_TOKEN", &env.token)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()?;
    let status = support::wait_exit(&mut child, EXAMPLE_DEADLINE, "finish")?;
    Ok((
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&log).unwrap_or_default(),
    ))
}

fn start_up(dir: &Path) -> Result<(std::process::Child, serde_json::Value)> {
    let log = std::fs::File::create(dir.join("up.log"))?;
    let ready = dir.join("ready.json");
    let mut child = Command::new(NDC)
        .current_dir(dir)
        .args(["up", "--data-dir", "ndc-data"])
        .args(["--listen", "127.0.0.1:0", "--kube-listen", "127.0.0.1:0"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .arg("--ready-file")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let summary = support::wait_up_ready(&mut child, &ready, &dir.join("up.log"), UP_DEADLINE)?;
    Ok((child, summary))
}

#[test]
fn examples_are_read_from_help_with_their_continuations() {
    let text = "Usage: ndc x\n\nExamples:\n  ndc a --b \\\n    --c d\n  ndc e   # a comment\n\nMore text\n  ndc not-an-example\n";
    assert_eq!(
        examples(text),
        vec!["ndc a --b --c d", "ndc e   # a comment"]
    );
    let text = "Commands:\n  tenant  Tenants\n  help    Print this message\n\nOptions:\n";
    assert_eq!(subcommands(text), vec!["tenant"]);
}

#[test]
fn every_help_example_runs_against_ndc_up() -> Result<()> {
    let examples = all_examples()?;
    // Enough that a change in clap's help layout cannot silently find none.
    assert!(examples.len() >= 25, "found only {examples:?}");

    let dir = tempfile::tempdir()?;
    // What examples name on the newcomer's disk: the repository's samples
    // and a file to store.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::os::unix::fs::symlink(
        repo.join("samples").canonicalize()?,
        dir.path().join("samples"),
    )?;
    std::fs::write(
        dir.path().join("record.json"),
        r#"{"so_hieu": "01/2025/QĐ-UBND"}"#,
    )?;
    let (mut up, summary) = start_up(dir.path())?;
    let token_file = summary["operator_token_file"]
        .as_str()
        .context("operator_token_file")?;
    let env = Env {
        dir: dir.path().to_path_buf(),
        endpoint: summary["control_plane"]
            .as_str()
            .context("control_plane")?
            .to_string(),
        token: std::fs::read_to_string(token_file)?.trim().to_string(),
        bin_dir: Path::new(NDC).parent().context("bin dir")?.to_path_buf(),
    };

    let (last, first): (Vec<&String>, Vec<&String>) = examples
        .iter()
        .partition(|e| LAST.iter().any(|p| e.starts_with(p)));
    let mut failures = Vec::new();
    let mut ran = 0;
    for example in first.into_iter().chain(last) {
        if let Some(why) = reason(SKIPPED, example, true) {
            eprintln!("skipped: {example}\n  ({why})");
            continue;
        }
        if example.starts_with("ndc watch") {
            // Something to watch: ten changes under the prefix it names.
            for i in 0..10 {
                run(&env, &format!("ndc put /demo/watched-{i} {i}"))?;
            }
        }
        let refusal_ok = reason(MAY_BE_REFUSED, example, false);
        match run(&env, example) {
            Ok((0, _)) => ran += 1,
            Ok((1, _)) if refusal_ok.is_some() => ran += 1,
            Ok((code, out)) => failures.push(format!("{example}\n  exit {code}:\n{out}")),
            Err(e) => failures.push(format!("{example}\n  {e}")),
        }
    }

    // A reader that goes away ends the output quietly, with status 0, as
    // `ls | head` does: here the reader is gone before the first line.
    for args in [
        &["tenant", "tree"][..],
        &["catalog"],
        &["tenant", "list", "-o", "json"],
    ] {
        let mut child = Command::new(NDC)
            .args(args)
            .env("NDC_ENDPOINTS", &env.endpoint)
            .env("NDC_TOKEN", &env.token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        drop(child.stdout.take());
        let out = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !stderr.is_empty() {
            failures.push(format!(
                "ndc {} with its reader gone: {}\n{stderr}",
                args.join(" "),
                out.status
            ));
        }
    }

    Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()?;
    let _ = up.wait();
    assert!(
        failures.is_empty(),
        "{} of {} examples failed:\n\n{}",
        failures.len(),
        ran + failures.len(),
        failures.join("\n\n")
    );
    eprintln!("{ran} examples ran");
    Ok(())
}
