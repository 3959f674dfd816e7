//! A client for a cluster given as several endpoints. It prefers the leader
//! (writes then skip a forwarding hop) and moves to another member when the
//! one it talks to is unreachable or has no leader.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::cluster::cluster_client::ClusterClient;
use crate::cluster::StatusRequest;
use crate::error::{Error, Result};
use crate::kv::kv_client::KvClient;

/// How long one connection attempt may take before the next member is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request keeps trying members before it gives up. A leader
/// election takes about a second; this leaves room for several.
const RETRY_BUDGET: Duration = Duration::from_secs(15);
/// Pause between two rounds over all members.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Client {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    preferred: AtomicUsize,
    auth: Auth,
    /// Whether any member has answered yet. Until one has, a round in
    /// which every member refused the connection ends the call at once:
    /// nothing is running there. After that, refusals are retried, as a
    /// member may be restarting.
    answered: AtomicBool,
}

/// Adds `authorization: Bearer <token>` to every request, when a token is set.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    header: Option<(
        &'static str,
        tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    )>,
    request_id: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

/// Metadata key of a write's request id: the server applies a write once
/// per id, so a retry after a lost answer does not apply it again.
pub const REQUEST_ID_HEADER: &str = "ndc-request-id";

/// A fresh request id: 128 random bits in hex.
pub fn new_request_id() -> String {
    let mut raw = [0u8; 16];
    if getrandom::fill(&mut raw).is_err() {
        // No random generator: time, process and a counter still make a
        // collision between two clients' retries vanishingly unlikely.
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed) as u128;
        let mix = nanos ^ (u128::from(std::process::id()) << 96) ^ (count << 64);
        raw = mix.to_be_bytes();
    }
    hex::encode(raw)
}

/// Metadata key of the secret that control-plane nodes present to each other.
pub const CLUSTER_SECRET_HEADER: &str = "ndc-cluster-secret";

impl Auth {
    /// A caller's bearer token.
    pub fn new(token: Option<&str>) -> Result<Self> {
        let header = match token.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => Some((
                "authorization",
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| Error::InvalidToken)?,
            )),
            None => None,
        };
        Ok(Self {
            header,
            request_id: None,
        })
    }

    /// The same credentials, with a request id for one logical write.
    pub fn with_request_id(mut self, id: &str) -> Result<Self> {
        self.request_id = Some(id.parse().map_err(|_| Error::InvalidToken)?);
        Ok(self)
    }

    /// The cluster secret, for node-to-node calls.
    pub fn cluster(secret: Option<&str>) -> Result<Self> {
        let header = match secret {
            Some(s) => Some((
                CLUSTER_SECRET_HEADER,
                s.parse().map_err(|_| Error::InvalidToken)?,
            )),
            None => None,
        };
        Ok(Self {
            header,
            request_id: None,
        })
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, Status> {
        if let Some((name, value)) = &self.header {
            req.metadata_mut().insert(*name, value.clone());
        }
        if let Some(id) = &self.request_id {
            req.metadata_mut().insert(REQUEST_ID_HEADER, id.clone());
        }
        Ok(req)
    }
}

/// Turns `host:port` into `http://host:port`; keeps a URI that has a scheme.
pub fn endpoint_uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// A lazily connected channel to one address.
pub fn channel(addr: &str) -> Result<Channel> {
    let uri = endpoint_uri(addr);
    let ep = Endpoint::from_shared(uri.clone()).map_err(|e| Error::InvalidEndpoint {
        endpoint: addr.to_string(),
        reason: e.to_string(),
    })?;
    Ok(ep
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy())
}

fn retriable(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable)
}

/// Whether a call failed because the address refused the TCP connection:
/// no process listens there (as opposed to a member that answered without
/// a leader, or one that is slow).
pub fn connection_refused(s: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// The answer when no member was ever reached and every one refused the
/// connection: which addresses were tried and what to start.
fn nothing_listening(endpoints: &[String]) -> Status {
    Status::unavailable(format!(
        "nothing is listening at {} (connection refused): start a control plane there \
         (`ndc up`, or `ndc server`), or name running members with --endpoints or NDC_ENDPOINTS",
        endpoints.join(", ")
    ))
}

impl Client {
    /// A client for these members; nothing is contacted until the first call.
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.as_ref().trim().to_string())
            .collect();
        let channels = endpoints
            .iter()
            .map(|e| channel(e))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            endpoints,
            channels,
            preferred: AtomicUsize::new(0),
            auth: Auth::default(),
            answered: AtomicBool::new(false),
        })
    }

    /// Sends this bearer token with every request.
    pub fn with_token(mut self, token: Option<&str>) -> Result<Self> {
        self.auth = Auth::new(token)?;
        Ok(self)
    }

    /// The interceptor that adds this client's token; pass it to a
    /// generated client's `with_interceptor`.
    pub fn auth(&self) -> Auth {
        self.auth.clone()
    }

    /// Like [`Client::new`] with a token, then asks the members which one
    /// leads and prefers it, so writes skip the forwarding hop. An
    /// unreachable cluster is not an error here: the first call reports it.
    pub async fn connect<S: AsRef<str>>(endpoints: &[S], token: Option<&str>) -> Result<Self> {
        let client = Self::new(endpoints)?.with_token(token)?;
        if client.channels.len() > 1 {
            client.find_leader().await;
        }
        Ok(client)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The object API on the preferred member.
    pub fn kv(&self) -> KvClient<InterceptedService<Channel, Auth>> {
        KvClient::with_interceptor(
            self.channels[self.preferred.load(Ordering::Relaxed)].clone(),
            self.auth(),
        )
        .max_decoding_message_size(64 * 1024 * 1024)
    }

    /// The cluster API on the preferred member.
    pub fn cluster(&self) -> ClusterClient<InterceptedService<Channel, Auth>> {
        ClusterClient::with_interceptor(
            self.channels[self.preferred.load(Ordering::Relaxed)].clone(),
            self.auth(),
        )
    }

    /// Asks the members for the leader and prefers it when it is one of the
    /// endpoints. Returns the leader's address if one is known.
    pub async fn find_leader(&self) -> Option<String> {
        for ch in &self.channels {
            let Ok(resp) = ClusterClient::new(ch.clone())
                .status(StatusRequest {})
                .await
            else {
                continue;
            };
            let status = resp.into_inner();
            if status.leader_addr.is_empty() {
                continue;
            }
            if let Some(i) = self
                .endpoints
                .iter()
                .position(|e| endpoint_uri(e) == endpoint_uri(&status.leader_addr))
            {
                self.preferred.store(i, Ordering::Relaxed);
            }
            return Some(status.leader_addr);
        }
        None
    }

    /// Runs `call` against the preferred member, moving to the others while
    /// the answer is UNAVAILABLE (unreachable, or no leader yet).
    /// Like [`Client::call`] for a write: every attempt carries the same
    /// request id, so a retry after a lost answer is not applied twice.
    pub async fn write<T, F, Fut>(&self, call: F) -> std::result::Result<T, Status>
    where
        F: Fn(Channel, Auth) -> Fut,
        Fut: Future<Output = std::result::Result<T, Status>>,
    {
        let auth = self
            .auth()
            .with_request_id(&new_request_id())
            .map_err(|e| Status::internal(e.to_string()))?;
        self.call(|ch| call(ch, auth.clone())).await
    }

    pub async fn call<T, F, Fut>(&self, call: F) -> std::result::Result<T, Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<T, Status>>,
    {
        let deadline = tokio::time::Instant::now() + RETRY_BUDGET;
        let n = self.channels.len();
        loop {
            let start = self.preferred.load(Ordering::Relaxed);
            let mut last = None;
            let mut refused = 0;
            for step in 0..n {
                let i = (start + step) % n;
                match call(self.channels[i].clone()).await {
                    Ok(v) => {
                        self.preferred.store(i, Ordering::Relaxed);
                        self.answered.store(true, Ordering::Relaxed);
                        return Ok(v);
                    }
                    Err(s) if connection_refused(&s) => {
                        refused += 1;
                        last = Some(s);
                    }
                    Err(s) if retriable(&s) => {
                        self.answered.store(true, Ordering::Relaxed);
                        last = Some(s);
                    }
                    Err(s) => {
                        self.answered.store(true, Ordering::Relaxed);
                        return Err(s);
                    }
                }
            }
            if refused == n && !self.answered.load(Ordering::Relaxed) {
                return Err(nothing_listening(&self.endpoints));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(last.unwrap_or_else(|| Status::unavailable("no member answered")));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(endpoint_uri("127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(endpoint_uri("https://a:1"), "https://a:1");
    }

    #[tokio::test]
    async fn a_refused_connection_fails_at_once_naming_the_address() {
        // A port that was free a moment ago: nothing listens there now.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .to_string();
        let client = Client::connect(&[addr.as_str()], None).await.unwrap();
        let err = client
            .call(|ch| async move { ClusterClient::new(ch).status(StatusRequest {}).await })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        // The message of the fast path, not the one after the retry budget.
        assert!(
            err.message().contains(&format!(
                "nothing is listening at {addr} (connection refused)"
            )),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn empty_and_invalid_endpoints_are_refused() {
        assert!(matches!(Client::new::<&str>(&[]), Err(Error::NoEndpoints)));
        assert!(matches!(
            Client::new(&["not a uri at all"]),
            Err(Error::InvalidEndpoint { .. })
        ));
    }
}
