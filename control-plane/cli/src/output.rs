//! Output formats and the CLI's error convention: `error: <what>`, then one
//! `  caused by: <why>` per link; exit 1 for a refused request, 2 for usage
//! or unexpected errors.

use tonic::{Code, Status};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug)]
pub enum CliError {
    /// The cluster understood the request and said no.
    Refused(anyhow::Error),
    /// Bad usage, unreachable cluster, or anything unexpected.
    Failed(anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused(_) => 1,
            CliError::Failed(_) => 2,
        }
    }

    pub fn print(&self) {
        let (CliError::Refused(e) | CliError::Failed(e)) = self;
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Failed(e)
    }
}

/// Maps a gRPC status from the cluster to the CLI's two kinds of failure.
pub fn status(context: impl Into<String>, s: Status) -> CliError {
    let refused = matches!(
        s.code(),
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::PermissionDenied
            | Code::Unauthenticated
    );
    let err = anyhow::anyhow!("{}", s.message()).context(context.into());
    if refused {
        CliError::Refused(err)
    } else {
        CliError::Failed(err)
    }
}

/// A client for the given members that prefers the leader.
pub async fn client(endpoints: &[String]) -> Result<ndc_api::Client, CliError> {
    ndc_api::Client::connect(endpoints)
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

pub fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}
