//! A client's connection to one ferry node: QUIC with mutual TLS, one bidirectional stream per
//! request. [`Connector`] knows how to (re)connect; [`Session`] is one live connection.

use ferry_net::conn::{NodeAddr, log_path_stats, message_name};
use ferry_net::tls::{self, Credentials, HandshakeRefusal, revocation};
use ferry_net::wire::{FrameReader, FrameWriter, Incoming, WireError};
use ferry_proto::{DeptId, ErrorCode, Message, PROTOCOL_MINOR, Role};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why talking to a node failed; variants say what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot open a local UDP socket: {0}")]
    Bind(std::io::Error),
    #[error("cannot connect to {node}: {reason}")]
    Connect { node: String, reason: String },
    #[error("{node} refused the connection: {}", tls::refusal_message(*.refusal))]
    Refused { node: String, refusal: HandshakeRefusal },
    #[error(
        "we refused the certificate of {node} ({refusal}): it is not a node of our CA, or it is expired or revoked"
    )]
    NodeRejected { node: String, refusal: HandshakeRefusal },
    #[error("{node} closed our connection: our certificate was revoked")]
    Revoked { node: String },
    #[error("{node} closed our connection: our certificate expired")]
    Expired { node: String },
    #[error("connection to {node} lost: {source}")]
    Connection { node: String, source: quinn::ConnectionError },
    #[error("stream error: {0}")]
    Wire(WireError),
    #[error("{code}: {message}")]
    Remote { code: ErrorCode, message: String },
    #[error("protocol violation: expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: String },
}

impl ClientError {
    /// Whether the same request may succeed on a new connection (lost link, draining node).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Connection { .. } => true,
            Self::Wire(WireError::Read(_) | WireError::Write(_) | WireError::Closed(_)) => true,
            Self::Remote { code, .. } => code.is_retryable(),
            _ => false,
        }
    }
}

/// How long [`Connector::shutdown`] lets the closed connections' drivers run: each sends its
/// CONNECTION_CLOSE on its next turn, well within this even on a loaded machine.
pub const CLOSE_GRACE: Duration = Duration::from_millis(50);

/// Opens connections to one node with one set of credentials.
#[derive(Clone)]
pub struct Connector {
    endpoint: quinn::Endpoint,
    node: NodeAddr,
    /// Credentials to build each connection's configuration from, instead of the endpoint's
    /// default one: the node is then checked against the CRL in force at each connect.
    creds: Option<Arc<Credentials>>,
    /// The grant the reads of its sessions are made for ([`Connector::for_grant`]).
    for_grant: Option<u64>,
}

impl Connector {
    /// A client endpoint on an ephemeral local port, configured with `creds`.
    pub fn new(creds: &Credentials, node: NodeAddr) -> Result<Self, ClientError> {
        let endpoint = client_endpoint(creds, node.addr)?;
        Ok(Self { endpoint, node, creds: Some(Arc::new(creds.clone())), for_grant: None })
    }

    /// Uses an endpoint that already has a default client configuration.
    pub fn with_endpoint(endpoint: quinn::Endpoint, node: NodeAddr) -> Self {
        Self { endpoint, node, creds: None, for_grant: None }
    }

    /// Makes every read of its sessions (`ListVersions`, `GetManifest`, `GetChunks`) a read for
    /// grant `grant` (`Message::ForGrant`): the ministry's hub fetching, from the provider's
    /// node, what another department's grant allows, so the transfer engine runs unchanged.
    pub fn for_grant(mut self, grant: u64) -> Self {
        self.for_grant = Some(grant);
        self
    }

    /// Connects with configurations built from `creds` at each connect, as [`Connector::new`]
    /// does, instead of the endpoint's default one (built when the endpoint was): the node is
    /// checked against the CRL in force then ([`Credentials::crls`] follows the file), and a
    /// node on this host gets [`tls::loopback_transport_config`].
    pub fn with_loopback_config(mut self, creds: &Credentials) -> Result<Self, ClientError> {
        self.creds = Some(Arc::new(creds.clone()));
        Ok(self)
    }

    /// The configuration of the next connection; `None` for the endpoint's default.
    fn client_config(&self) -> Result<Option<quinn::ClientConfig>, ClientError> {
        let Some(creds) = &self.creds else { return Ok(None) };
        let config = if tls::is_loopback(self.node.addr) {
            tls::loopback_client_config(creds)?
        } else {
            tls::client_config(creds)?
        };
        Ok(Some(config))
    }

    pub fn node(&self) -> &NodeAddr {
        &self.node
    }

    /// Closes every connection of this endpoint and gives their drivers [`CLOSE_GRACE`] to tell
    /// the node, so it frees the connection's state now rather than after its idle timeout. It
    /// does not wait for the endpoint to go idle: a closed connection lingers for QUIC's
    /// draining period (three probe timeouts, 0.3–0.5 s on a 30–80 ms path) to answer the
    /// node's late packets with the close again, and a `ferry pull` spent that period after
    /// its commit.
    pub async fn shutdown(&self) {
        self.endpoint.close(quinn::VarInt::from_u32(0), b"done");
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
    }

    /// Connects and says hello. A refused certificate becomes [`ClientError::Refused`].
    pub async fn connect(&self) -> Result<Session, ClientError> {
        let mut session = self.handshake().await?;
        session.say_hello().await?;
        Ok(session)
    }

    /// Connects, then says hello and asks each of `requests` at once, each on its own stream:
    /// the node answers every stream on its own, so a pull's first questions take one round
    /// trip between them instead of one each (0.08 s each on an 80 ms link). The answers come
    /// in the order of `requests`; an `Error` answer is its element's `Err`. A failed hello
    /// fails the whole.
    pub async fn connect_asking(
        &self,
        requests: &[Message],
    ) -> Result<(Session, Vec<Result<Message, ClientError>>), ClientError> {
        let mut session = self.handshake().await?;
        let asked = session.clone();
        let answers = futures::future::join_all(requests.iter().map(|request| asked.request(request)));
        let (hello, answers) = tokio::join!(session.say_hello(), answers);
        hello?;
        Ok((session, answers))
    }

    /// The QUIC connection with mutual TLS, before any request.
    async fn handshake(&self) -> Result<Session, ClientError> {
        let node = self.node.to_string();
        let connecting = match self.client_config()? {
            Some(config) => self.endpoint.connect_with(config, self.node.addr, &self.node.server_name),
            None => self.endpoint.connect(self.node.addr, &self.node.server_name),
        }
        .map_err(|e| ClientError::Connect { node: node.clone(), reason: e.to_string() })?;
        let conn = match tokio::time::timeout(Duration::from_secs(15), connecting).await {
            Err(_) => {
                return Err(ClientError::Connect { node, reason: "no answer within 15 s".into() });
            }
            Ok(Err(e)) => return Err(connection_error(&node, e)),
            Ok(Ok(conn)) => conn,
        };
        Ok(Session { conn, node, hello: None, for_grant: self.for_grant })
    }
}

/// Builds a client endpoint bound to the unspecified address of `peer`'s family.
pub fn client_endpoint(creds: &Credentials, peer: SocketAddr) -> Result<quinn::Endpoint, ClientError> {
    let bind: SocketAddr =
        if peer.is_ipv6() { "[::]:0".parse() } else { "0.0.0.0:0".parse() }.expect("literal socket address");
    let mut endpoint = tls::endpoint(bind, None).map_err(ClientError::Bind)?;
    endpoint.set_default_client_config(tls::client_config(creds)?);
    Ok(endpoint)
}

fn agent() -> String {
    format!("ferry/{}", env!("CARGO_PKG_VERSION"))
}

/// Maps a connection error to a refusal when the peer's TLS alert says why.
pub fn connection_error(node: &str, e: quinn::ConnectionError) -> ClientError {
    if let Some(refusal) = tls::explain_connection_error(&e) {
        return ClientError::Refused { node: node.to_owned(), refusal };
    }
    if let Some(refusal) = tls::explain_local_refusal(&e) {
        return ClientError::NodeRejected { node: node.to_owned(), refusal };
    }
    if let quinn::ConnectionError::ApplicationClosed(close) = &e {
        let node = node.to_owned();
        match u32::try_from(close.error_code.into_inner()) {
            Ok(revocation::CLOSE_REVOKED) => return ClientError::Revoked { node },
            Ok(revocation::CLOSE_EXPIRED) => return ClientError::Expired { node },
            _ => {}
        }
    }
    ClientError::Connection { node: node.to_owned(), source: e }
}

/// What the node said in its `HelloAck`.
#[derive(Debug, Clone)]
pub struct Hello {
    pub node_name: String,
    pub node_dept: DeptId,
    pub our_dept: DeptId,
    pub our_role: Role,
}

/// One live, authenticated connection to a node. Clones share the connection.
#[derive(Clone)]
pub struct Session {
    conn: quinn::Connection,
    node: String,
    hello: Option<Hello>,
    /// Reads are sent as reads for this grant ([`Connector::for_grant`]).
    for_grant: Option<u64>,
}

impl Session {
    pub fn hello(&self) -> Option<&Hello> {
        self.hello.as_ref()
    }

    /// Sends `Hello` and keeps what the node says of itself and of us.
    async fn say_hello(&mut self) -> Result<(), ClientError> {
        match self.request(&Message::Hello { minor: PROTOCOL_MINOR, agent: agent() }).await? {
            Message::HelloAck { node, node_dept, peer_dept, peer_role } => {
                self.hello =
                    Some(Hello { node_name: node, node_dept, our_dept: peer_dept, our_role: peer_role });
                Ok(())
            }
            other => Err(ClientError::Unexpected { expected: "HelloAck", got: message_name(&other) }),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    fn wire_error(&self, e: WireError) -> ClientError {
        match e {
            WireError::Read(quinn::ReadError::ConnectionLost(c))
            | WireError::Write(quinn::WriteError::ConnectionLost(c)) => connection_error(&self.node, c),
            other => ClientError::Wire(other),
        }
    }

    /// Opens a stream and sends `msg` without finishing the stream (for uploads). A read of a
    /// session made for a grant goes out as a read for that grant.
    pub async fn open(&self, msg: &Message) -> Result<(FrameWriter, FrameReader), ClientError> {
        let (send, recv) = self.conn.open_bi().await.map_err(|e| connection_error(&self.node, e))?;
        let mut writer = FrameWriter::new(send);
        let read = matches!(
            msg,
            Message::ListVersions { .. } | Message::GetManifest { .. } | Message::GetChunks { .. }
        );
        let sent = match self.for_grant {
            Some(grant) if read => {
                writer.send(&Message::ForGrant { grant, read: Box::new(msg.clone()) }).await
            }
            _ => writer.send(msg).await,
        };
        sent.map_err(|e| self.wire_error(e))?;
        Ok((writer, FrameReader::new(recv)))
    }

    /// Sends one request and returns the reader for its answer frames.
    pub async fn start(&self, msg: &Message) -> Result<FrameReader, ClientError> {
        let (mut writer, reader) = self.open(msg).await?;
        writer.finish().map_err(|e| self.wire_error(e))?;
        Ok(reader)
    }

    /// Reads the next answer frame; `Error` frames become [`ClientError::Remote`].
    pub async fn read(&self, reader: &mut FrameReader) -> Result<Message, ClientError> {
        match reader.next().await.map_err(|e| self.wire_error(e))? {
            Some(Message::Error { code, message }) => Err(ClientError::Remote { code, message }),
            Some(msg) => Ok(msg),
            None => Err(ClientError::Unexpected { expected: "an answer", got: "end of stream".into() }),
        }
    }

    /// The next frame of an answer, chunks in received pieces (see [`FrameReader::next_incoming`]).
    pub async fn read_incoming(&self, reader: &mut FrameReader) -> Result<Incoming, ClientError> {
        match reader.next_incoming().await.map_err(|e| self.wire_error(e))? {
            Some(Incoming::Message(Message::Error { code, message })) => {
                Err(ClientError::Remote { code, message })
            }
            Some(incoming) => Ok(incoming),
            None => Err(ClientError::Unexpected { expected: "an answer", got: "end of stream".into() }),
        }
    }

    /// One request, one answer.
    pub async fn request(&self, msg: &Message) -> Result<Message, ClientError> {
        let mut reader = self.start(msg).await?;
        self.read(&mut reader).await
    }

    /// The connection's current round-trip time estimate.
    pub fn rtt(&self) -> std::time::Duration {
        self.conn.rtt()
    }

    /// The smallest round-trip time measured on the connection: the path's own delay, without
    /// the time either end took to answer (a handshake's certificate checks, a busy host).
    pub fn min_rtt(&self) -> std::time::Duration {
        self.conn.min_rtt()
    }

    /// Closes the connection politely.
    pub fn close(&self) {
        log_path_stats(&self.conn, "connection closed");
        self.conn.close(quinn::VarInt::from_u32(0), b"done");
    }
}
