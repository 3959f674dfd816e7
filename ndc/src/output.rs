//! Output formats and the CLI's error convention: `error: <what>`, then one
//! `  caused by: <why>` per link; exit 1 for a refused request, 2 for usage
//! or unexpected errors.

use tonic::{Code, Status};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Debug)]
pub enum CliError {
    /// The cluster understood the request and said no.
    Refused(anyhow::Error),
    /// Bad usage, unreachable cluster, or anything unexpected.
    Failed(anyhow::Error),
    /// Whoever read the output went away (`ndc tenant tree | head`): the
    /// output ends there, quietly and successfully, as `ls | head` does.
    OutputClosed,
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused(_) => 1,
            CliError::Failed(_) => 2,
            CliError::OutputClosed => 0,
        }
    }

    pub fn print(&self) {
        let (CliError::Refused(e) | CliError::Failed(e)) = self else {
            return;
        };
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
    }
}

/// Writes the command's output to stdout. A closed reader ends the
/// command with [`CliError::OutputClosed`]; any other write error fails it.
pub fn write_out(args: std::fmt::Arguments<'_>) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => CliError::OutputClosed,
            _ => CliError::Failed(anyhow::Error::new(e).context("cannot write the output")),
        })
}

/// `println!` for the command's output: returns early with
/// [`CliError::OutputClosed`] when the reader has gone.
macro_rules! outln {
    () => {
        $crate::output::write_out(format_args!("\n"))?
    };
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

/// `print!` for the command's output, as [`outln!`] without the newline.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!($($arg)*))?
    };
}

pub(crate) use {out, outln};

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Failed(e)
    }
}

/// Maps a gRPC status from the cluster to the CLI's two kinds of failure.
pub fn status(context: impl Into<String>, s: Status) -> CliError {
    // A refused credential is the caller's to fix, like a refusal.
    let refused = ndc_api::is_refusal(&s) || s.code() == Code::Unauthenticated;
    let err = anyhow::anyhow!("{}", s.message()).context(context.into());
    if refused {
        CliError::Refused(err)
    } else {
        CliError::Failed(err)
    }
}

/// Where the cluster is and who is asking.
#[derive(Debug, Clone)]
pub struct Conn {
    pub endpoints: Vec<String>,
    pub token: Option<String>,
}

/// A client for the given members that prefers the leader.
pub async fn client(conn: &Conn) -> Result<ndc_api::Client, CliError> {
    ndc_api::Client::connect(&conn.endpoints, conn.token.as_deref())
        .await
        .map_err(|e| CliError::Failed(e.into()))
}

/// Shows a value as text when it is UTF-8, or says how many bytes it has.
pub fn show_value(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) => s.to_string(),
        Err(_) => format!("<{} bytes of binary data>", v.len()),
    }
}

/// Prints structured output as JSON or YAML.
pub fn print_data<T: serde::Serialize>(format: Format, v: &T) -> Result<(), CliError> {
    match format {
        Format::Yaml => match serde_saphyr::to_string(v) {
            Ok(s) => out!("{s}"),
            Err(e) => eprintln!("error: cannot render YAML: {e}"),
        },
        _ => match serde_json::to_string_pretty(v) {
            Ok(s) => outln!("{s}"),
            Err(e) => eprintln!("error: cannot render JSON: {e}"),
        },
    }
    Ok(())
}
