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
pub fn print_data<T: serde::Serialize>(format: Format, v: &T) {
    match format {
        Format::Yaml => match serde_saphyr::to_string(v) {
            Ok(s) => print!("{s}"),
            Err(e) => eprintln!("error: cannot render YAML: {e}"),
        },
        _ => match serde_json::to_string_pretty(v) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot render JSON: {e}"),
        },
    }
}
