//! Node-to-node messages: openraft's RPCs as postcard bodies in HTTP/1.1 `POST`s, inside the
//! mutual-TLS peer channels of [`peer`](crate::peer).
//!
//! - `POST /raft/append`, `/raft/vote`, `/raft/snapshot`: the request body is the encoded
//!   openraft request; a `200` answer's body the encoded `Result` of the receiving engine.
//! - `POST /raft/forward`: a follower's [`write`](crate::RaftNode::write) forwarded to the
//!   leader. The body is the command's bytes; a `200` answer's body an encoded
//!   [`ForwardAnswer`]. Only a current member may forward (`403` otherwise); a command over the
//!   command size limit is refused with `413`; the leader waits at most the write timeout for
//!   the command to commit and answers that it did not otherwise, never that it did.
//! - The server knows the sender by its certificate (its node DID, checked against the allowed
//!   set in the handshake). A message speaking for a node id that the membership binds to
//!   another DID is refused with `403`; a body over the size limit with `413`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError,
    RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, Membership};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use zero_auth::Did;

use crate::blobs::{self, BlobStore};
use crate::codec::{decode, encode};
use crate::peer::PeerChannel;
use crate::{Member, NodeId, Raft, Request as Command, TypeConfig};

const APPEND: &str = "/raft/append";
const VOTE: &str = "/raft/vote";
const SNAPSHOT: &str = "/raft/snapshot";
const FORWARD: &str = "/raft/forward";

/// How long a peer has to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most peer connections served at once (handshakes included).
const MAX_CONNECTIONS: usize = 256;

/// Limits shared by both ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The largest message body sent or accepted.
    pub(crate) max_message_bytes: usize,
    /// How long to wait for a TCP connection to a peer.
    pub(crate) connect_timeout: Duration,
    /// The largest command a forwarded write may carry.
    pub(crate) max_command_bytes: usize,
    /// How long the leader waits for a forwarded write to commit.
    pub(crate) write_timeout: Duration,
}

/// The leader's answer to a forwarded write.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ForwardAnswer {
    /// Committed and applied on the leader at `index`, with the state machine's response.
    Written {
        /// The log index.
        index: u64,
        /// The state machine's response.
        response: Vec<u8>,
    },
    /// The receiver is not (or no longer) the leader; the one it knows of.
    NotLeader {
        /// The leader's id, when known.
        leader_id: Option<NodeId>,
        /// The leader's address and DID, when known.
        leader: Option<Member>,
    },
    /// The write was not acknowledged, with the reason. It was not committed by the time of
    /// the answer; when the reason is a timeout it may still commit later.
    Failed(String),
}

/// Whether the authenticated `did` may speak for node `claimed`, by `membership` (this node's
/// latest view). A node id bound to another DID is refused; so is a DID that is another
/// member's. An id the membership does not know yet is let through (a new node has no
/// membership before its first append; the allowed set already vouched for the DID).
pub(crate) fn check_sender(
    membership: &Membership<NodeId, Member>,
    claimed: NodeId,
    did: &Did,
) -> Result<(), String> {
    if let Some(member) = membership.get_node(&claimed) {
        if member.did == did.as_str() {
            return Ok(());
        }
        return Err(format!(
            "node {claimed} is {} in the cluster membership; {did} may not speak for it",
            member.did
        ));
    }
    if let Some((other, _)) = membership.nodes().find(|(_, m)| m.did == did.as_str()) {
        return Err(format!(
            "{did} is node {other} in the cluster membership, not node {claimed}"
        ));
    }
    Ok(())
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message.into())));
    *response.status_mut() = status;
    response
}

fn encoded<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    match encode(value) {
        Ok(bytes) => Response::new(Full::new(Bytes::from(bytes))),
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        ),
    }
}

/// The server's handling of one request from the peer `did`.
async fn handle(
    raft: Raft,
    did: Did,
    limits: Limits,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "peer messages are POSTs");
    }
    let path = request.uri().path().to_string();
    if ![APPEND, VOTE, SNAPSHOT, FORWARD].contains(&path.as_str()) {
        return plain(StatusCode::NOT_FOUND, format!("no peer endpoint {path}"));
    }
    let body = match Limited::new(request.into_body(), limits.max_message_bytes)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "a peer message may be at most {} bytes",
                        limits.max_message_bytes
                    ),
                );
            }
            return plain(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            );
        }
    };
    let membership = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .clone();
    if path == FORWARD {
        return forwarded(&raft, &membership, &did, limits, body.to_vec()).await;
    }
    macro_rules! serve {
        ($ty:ty, $call:ident) => {{
            let rpc: $ty = match decode(&body) {
                Ok(rpc) => rpc,
                Err(e) => {
                    return plain(StatusCode::BAD_REQUEST, format!("malformed {path}: {e}"));
                }
            };
            if let Err(e) = check_sender(&membership, rpc.vote.leader_id.node_id, &did) {
                tracing::warn!(peer = %did, error = %e, "refused a peer message");
                return plain(StatusCode::FORBIDDEN, e);
            }
            encoded(&raft.$call(rpc).await)
        }};
    }
    match path.as_str() {
        APPEND => serve!(AppendEntriesRequest<TypeConfig>, append_entries),
        VOTE => serve!(VoteRequest<NodeId>, vote),
        _ => serve!(InstallSnapshotRequest<TypeConfig>, install_snapshot),
    }
}

/// The leader's side of a forwarded write from the peer `did`.
async fn forwarded(
    raft: &Raft,
    membership: &Membership<NodeId, Member>,
    did: &Did,
    limits: Limits,
    command: Vec<u8>,
) -> Response<Full<Bytes>> {
    if !membership.nodes().any(|(_, m)| m.did == did.as_str()) {
        tracing::warn!(peer = %did, "refused a forwarded write from a node that is not a member");
        return plain(
            StatusCode::FORBIDDEN,
            format!("{did} is not a member of this cluster; only members forward writes"),
        );
    }
    if command.len() > limits.max_command_bytes {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the command is {} bytes; one command may be at most {} bytes",
                command.len(),
                limits.max_command_bytes
            ),
        );
    }
    let answer =
        match tokio::time::timeout(limits.write_timeout, raft.client_write(Command(command))).await
        {
            Ok(Ok(written)) => ForwardAnswer::Written {
                index: written.log_id.index,
                response: written.data.0,
            },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                ForwardAnswer::NotLeader {
                    leader_id: f.leader_id,
                    leader: f.leader_node,
                }
            }
            Ok(Err(e)) => ForwardAnswer::Failed(format!("the leader refused the write: {e}")),
            Err(_) => ForwardAnswer::Failed(format!(
                "the leader did not commit the write within {:?} (is a majority of the voters \
             up?); it was not acknowledged and may or may not take effect",
                limits.write_timeout
            )),
        };
    encoded(&answer)
}

/// Serves the peer listener until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    channel: PeerChannel,
    raft: Raft,
    limits: Limits,
    blobs: Option<Arc<dyn BlobStore>>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, from) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a peer connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%from, "too many peer connections: dropping one");
            continue;
        };
        let channel = channel.clone();
        let raft = raft.clone();
        let blobs = blobs.clone();
        connections.spawn(async move {
            let _permit = permit;
            serve_connection(stream, from, channel, raft, limits, blobs).await;
        });
    }
    // Dropping the set aborts the connections still open.
}

async fn serve_connection(
    stream: TcpStream,
    from: SocketAddr,
    channel: PeerChannel,
    raft: Raft,
    limits: Limits,
    blobs: Option<Arc<dyn BlobStore>>,
) {
    let _ = stream.set_nodelay(true);
    let (tls, did) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, channel.accept(stream)).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => {
            tracing::warn!(%from, error = %e, "refused a peer connection");
            return;
        }
        Err(_) => {
            tracing::warn!(%from, "a peer did not complete its handshake in time");
            return;
        }
    };
    let service = hyper::service::service_fn(move |request| {
        let raft = raft.clone();
        let did = did.clone();
        let blobs = blobs.clone();
        async move {
            let response = match blobs {
                Some(store) if blobs::is_blob_path(request.uri().path()) => {
                    blobs::handle(store, did, request).await
                }
                _ => blobs::boxed(handle(raft, did, limits, request).await),
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(%from, error = %e, "peer connection ended");
    }
}

/// Makes connections to members for openraft.
#[derive(Clone)]
pub(crate) struct Network {
    pub(crate) channel: PeerChannel,
    pub(crate) limits: Limits,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Connection {
        Connection {
            target,
            member: node.clone(),
            channel: self.channel.clone(),
            limits: self.limits,
            sender: None,
        }
    }
}

/// One member's connection (opened on first use, reopened after a failure).
pub(crate) struct Connection {
    target: NodeId,
    member: Member,
    channel: PeerChannel,
    limits: Limits,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

fn network_error<E: std::error::Error>(message: String) -> RPCError<NodeId, Member, E> {
    RPCError::Network(NetworkError::new(&AnyError::error(message)))
}

fn unreachable<E: std::error::Error>(message: String) -> RPCError<NodeId, Member, E> {
    RPCError::Unreachable(Unreachable::new(&AnyError::error(message)))
}

impl Connection {
    /// Opens the TLS connection to the member and checks that it is the DID the membership
    /// names for it.
    async fn open<E: std::error::Error>(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, RPCError<NodeId, Member, E>>
    {
        let addr = &self.member.addr;
        let stream = match tokio::time::timeout(
            self.limits.connect_timeout,
            TcpStream::connect(addr.as_str()),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(unreachable(format!(
                    "cannot connect to node {} at {addr}: {e}",
                    self.target
                )));
            }
            Err(_) => {
                return Err(unreachable(format!(
                    "connecting to node {} at {addr} timed out",
                    self.target
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let (tls, did) =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.channel.connect(stream)).await {
                Ok(Ok(connected)) => connected,
                Ok(Err(e)) => {
                    return Err(unreachable(format!(
                        "node {} at {addr} refused or failed the peer handshake: {e}",
                        self.target
                    )));
                }
                Err(_) => {
                    return Err(unreachable(format!(
                        "the peer handshake with node {} at {addr} timed out",
                        self.target
                    )));
                }
            };
        if did.as_str() != self.member.did {
            return Err(unreachable(format!(
                "the node at {addr} is {did}, but node {} is {} in the membership",
                self.target, self.member.did
            )));
        }
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| network_error(format!("HTTP handshake with {addr}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "peer client connection ended");
            }
        });
        Ok(sender)
    }

    /// Sends one RPC and decodes the remote engine's answer.
    async fn call<Q, A, E>(
        &mut self,
        path: &'static str,
        rpc: &Q,
        entries: usize,
        option: &RPCOption,
    ) -> Result<A, RPCError<NodeId, Member, RaftError<NodeId, E>>>
    where
        Q: Serialize,
        A: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = encode(rpc).map_err(|e| network_error(format!("cannot encode {path}: {e}")))?;
        if body.len() > self.limits.max_message_bytes {
            if entries > 1 {
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint((entries / 2) as u64),
                ));
            }
            return Err(network_error(format!(
                "a {path} message of {} bytes exceeds the {}-byte peer message limit",
                body.len(),
                self.limits.max_message_bytes
            )));
        }
        match tokio::time::timeout(option.hard_ttl(), self.exchange(path, body, entries)).await {
            Ok(result) => result,
            Err(_) => {
                self.sender = None;
                Err(network_error(format!(
                    "node {} did not answer {path} within {:?}",
                    self.target,
                    option.hard_ttl()
                )))
            }
        }
    }

    async fn exchange<A, E>(
        &mut self,
        path: &'static str,
        body: Vec<u8>,
        entries: usize,
    ) -> Result<A, RPCError<NodeId, Member, RaftError<NodeId, E>>>
    where
        A: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.open().await?,
        };
        if sender.ready().await.is_err() {
            sender = self.open().await?;
        }
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(http::header::HOST, "zerocore-node")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| network_error(format!("cannot build the {path} request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| network_error(format!("sending {path} to node {}: {e}", self.target)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), self.limits.max_message_bytes)
            .collect()
            .await
            .map_err(|e| {
                network_error(format!("reading node {}'s {path} answer: {e}", self.target))
            })?
            .to_bytes();
        // The connection is healthy: keep it for the next message.
        self.sender = Some(sender);
        if status == StatusCode::PAYLOAD_TOO_LARGE && entries > 1 {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint((entries / 2) as u64),
            ));
        }
        if status != StatusCode::OK {
            return Err(network_error(format!(
                "node {} answered {path} with {status}: {}",
                self.target,
                String::from_utf8_lossy(&body)
            )));
        }
        let answer: Result<A, RaftError<NodeId, E>> = decode(&body).map_err(|e| {
            network_error(format!(
                "node {}'s {path} answer is malformed: {e}",
                self.target
            ))
        })?;
        answer.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.member.clone(),
                e,
            ))
        })
    }
}

/// Why a forwarded write got no answer: whether the command may have reached the leader.
#[derive(Debug)]
pub(crate) enum ForwardFailure {
    /// No connection was made; the leader never saw the command (safe to retry).
    NotSent(String),
    /// The command was sent but no answer came back: it may or may not be committed.
    Unanswered(String),
}

impl Connection {
    /// A connection to the member `target` (opened on first use).
    pub(crate) fn to(target: NodeId, member: Member, channel: PeerChannel, limits: Limits) -> Self {
        Connection {
            target,
            member,
            channel,
            limits,
            sender: None,
        }
    }

    /// Sends a write to the leader and waits at most `timeout` for its answer.
    pub(crate) async fn forward(
        &mut self,
        command: Vec<u8>,
        timeout: Duration,
    ) -> Result<ForwardAnswer, ForwardFailure> {
        let mut sender = self
            .open::<std::convert::Infallible>()
            .await
            .map_err(|e| ForwardFailure::NotSent(e.to_string()))?;
        sender
            .ready()
            .await
            .map_err(|e| ForwardFailure::NotSent(format!("node {}: {e}", self.target)))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(FORWARD)
            .header(http::header::HOST, "zerocore-node")
            .body(Full::new(Bytes::from(command)))
            .map_err(|e| ForwardFailure::NotSent(format!("cannot build the request: {e}")))?;
        let target = self.target;
        let max = self.limits.max_message_bytes;
        let exchange = async move {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("sending the write to node {target}: {e}"))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), max)
                .collect()
                .await
                .map_err(|e| format!("reading node {target}'s answer: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(ForwardFailure::Unanswered(e)),
            Err(_) => {
                return Err(ForwardFailure::Unanswered(format!(
                    "node {target} did not answer within {timeout:?}"
                )));
            }
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            return Err(ForwardFailure::Unanswered(format!(
                "node {target} failed to answer: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        if status != StatusCode::OK {
            // Refused before the leader wrote anything.
            return Ok(ForwardAnswer::Failed(format!(
                "node {target} refused the forwarded write ({status}): {}",
                String::from_utf8_lossy(&body)
            )));
        }
        decode(&body).map_err(|e| {
            ForwardFailure::Unanswered(format!("node {target}'s answer is malformed: {e}"))
        })
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let entries = rpc.entries.len();
        self.call(APPEND, &rpc, entries, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(SNAPSHOT, &rpc, 1, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(VOTE, &rpc, 1, &option).await
    }
}
