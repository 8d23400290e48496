//! Credential loading and real QUIC handshakes on loopback: the good certificate is accepted and
//! each kind of bad one is refused, with the refusal seen the same way on both sides.

use super::*;
use crate::testca::{CA_CERT_FILE, CRL_FILE, TempCa};
use ferry_proto::Role;
use quinn::{ConnectionError, Endpoint};
use std::sync::Mutex;
use std::time::Duration as StdDuration;
use time::Duration;

/// Records every refusal the serving side reports.
#[derive(Debug, Default)]
pub(crate) struct Recorder(Mutex<Vec<HandshakeRefusal>>);

impl HandshakeObserver for Recorder {
    fn refused(&self, reason: HandshakeRefusal) {
        self.0.lock().expect("recorder lock").push(reason);
    }
}

impl Recorder {
    fn seen(&self) -> Vec<HandshakeRefusal> {
        self.0.lock().expect("recorder lock").clone()
    }
}

pub(crate) fn paths(ca: &TempCa, cert: &Path, key: &Path) -> TlsPaths {
    TlsPaths {
        ca: ca.path().join(CA_CERT_FILE),
        cert: cert.to_owned(),
        key: key.to_owned(),
        crl: Some(ca.path().join(CRL_FILE)),
    }
}

/// A CA with the ministry node's credentials.
fn ministry() -> (TempCa, Credentials) {
    let ca = TempCa::new("ferry test root");
    let (cert, key, _) = ca.issue("ministry", Role::Ministry, "ministry");
    let creds = Credentials::load(&paths(&ca, &cert, &key)).expect("server creds");
    (ca, creds)
}

/// Runs one connection against a server built from `server` and returns the client's outcome
/// and the refusals the server observed.
async fn handshake(
    server: &Credentials,
    client: quinn::ClientConfig,
) -> (Result<(), ConnectionError>, Vec<HandshakeRefusal>) {
    let recorder = Arc::new(Recorder::default());
    let config = server_config(server, recorder.clone()).expect("server config");
    let server_ep = Endpoint::server(config, "127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = server_ep.local_addr().expect("addr");
    let serve = tokio::spawn({
        let endpoint = server_ep.clone();
        let observer = recorder.clone();
        async move {
            let incoming = endpoint.accept().await.expect("incoming");
            match incoming.await {
                Ok(conn) => {
                    if let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let data = recv.read_to_end(16).await.unwrap_or_default();
                        let _ = send.write_all(&data).await;
                        let _ = send.finish();
                    }
                    conn.closed().await;
                }
                Err(e) => observe_failed_handshake(&e, &*observer),
            }
        }
    });
    let client_ep = Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client bind");
    let outcome = tokio::time::timeout(StdDuration::from_secs(10), async {
        let conn = client_ep.connect_with(client, addr, "ministry").expect("connect").await?;
        let echoed = async {
            let (mut send, mut recv) = conn.open_bi().await.ok()?;
            send.write_all(b"x").await.ok()?;
            send.finish().ok()?;
            recv.read_to_end(16).await.ok()
        }
        .await;
        match echoed {
            Some(data) if data == b"x" => {
                conn.close(0u32.into(), b"done");
                Ok(())
            }
            _ => Err(conn.closed().await),
        }
    })
    .await
    .expect("client finished in time");
    tokio::time::timeout(StdDuration::from_secs(10), serve)
        .await
        .expect("server finished in time")
        .expect("server task");
    (outcome, recorder.seen())
}

/// Asserts the server observed `server_saw` and the client explains its error as `client_saw`.
async fn assert_refused(
    server: &Credentials,
    client: quinn::ClientConfig,
    server_saw: HandshakeRefusal,
    client_saw: HandshakeRefusal,
) {
    let (outcome, seen) = handshake(server, client).await;
    let err = outcome.expect_err("handshake must be refused");
    assert_eq!(seen, vec![server_saw], "server side, client error {err:?}");
    assert_eq!(explain_connection_error(&err), Some(client_saw), "client error {err:?}");
}

#[tokio::test]
async fn good_client_certificate_is_accepted() {
    let (ca, server) = ministry();
    let (cert, key, _) = ca.issue("gd-transport", Role::Province, "gd-node");
    let client = Credentials::load(&paths(&ca, &cert, &key)).expect("client creds");
    assert_eq!(client.principal().dept.as_str(), "gd-transport");
    let (outcome, seen) = handshake(&server, client_config(&client).expect("config")).await;
    outcome.expect("handshake and echo succeed");
    assert!(seen.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn missing_client_certificate_is_refused() {
    let (_ca, server) = ministry();
    let client = client_config_without_cert(server.ca_certs()).expect("config");
    assert_refused(&server, client, HandshakeRefusal::NoCertificate, HandshakeRefusal::NoCertificate).await;
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let (ca, server) = ministry();
    let rogue = TempCa::new("rogue root");
    let (cert, key, _) = rogue.issue("gd-transport", Role::Province, "gd-node");
    let mut client_paths = paths(&rogue, &cert, &key);
    client_paths.ca = ca.path().join(CA_CERT_FILE);
    client_paths.crl = Some(ca.path().join(CRL_FILE));
    let client = Credentials::load(&client_paths).expect("client creds");
    let config = client_config(&client).expect("config");
    assert_refused(&server, config, HandshakeRefusal::UnknownCa, HandshakeRefusal::UnknownCa).await;
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let (ca, server) = ministry();
    let (cert, key, _) =
        ca.issue_with_validity("gd-transport", Role::Province, "old", Duration::days(-3), Duration::days(-1));
    let client = Credentials::load(&paths(&ca, &cert, &key)).expect("client creds");
    let config = client_config(&client).expect("config");
    assert_refused(&server, config, HandshakeRefusal::Expired, HandshakeRefusal::Expired).await;
}

#[tokio::test]
async fn not_yet_valid_certificate_is_refused() {
    let (ca, server) = ministry();
    let (cert, key, _) =
        ca.issue_with_validity("gd-transport", Role::Province, "early", Duration::days(1), Duration::days(3));
    let client = Credentials::load(&paths(&ca, &cert, &key)).expect("client creds");
    let config = client_config(&client).expect("config");
    // The TLS alert cannot tell "not yet valid" from "expired"; the server knows.
    assert_refused(&server, config, HandshakeRefusal::NotYetValid, HandshakeRefusal::Expired).await;
}

#[tokio::test]
async fn revoked_certificate_is_refused_once_the_crl_is_reloaded() {
    let ca = TempCa::new("ferry test root");
    let (scert, skey, _) = ca.issue("ministry", Role::Ministry, "ministry");
    let server = Credentials::load(&paths(&ca, &scert, &skey)).expect("server creds");
    let (cert, key, serial) = ca.issue("gd-transport", Role::Province, "gd-node");
    let client = Credentials::load(&paths(&ca, &cert, &key)).expect("client creds");
    assert!(!server.reload_crl().expect("reload"), "nothing changed yet");

    ca.revoke(&serial);
    assert!(server.reload_crl().expect("reload"), "the new CRL is picked up");
    let config = client_config(&client).expect("config");
    assert_refused(&server, config, HandshakeRefusal::Revoked, HandshakeRefusal::Revoked).await;
}

#[tokio::test]
async fn other_protocol_version_is_refused() {
    let (ca, server) = ministry();
    let (cert, key, _) = ca.issue("gd-transport", Role::Province, "gd-node");
    let client = Credentials::load(&paths(&ca, &cert, &key)).expect("client creds");
    let mut tls = rustls_client_config(
        client.root_store().expect("roots"),
        &client.crls(),
        Some((client.cert_chain().to_vec(), client.key_der())),
    )
    .expect("tls");
    tls.alpn_protocols = vec![b"ferry/0".to_vec()];
    let config = quic_client_config(tls).expect("config");
    assert_refused(&server, config, HandshakeRefusal::WrongAlpn, HandshakeRefusal::WrongAlpn).await;
}

#[tokio::test]
async fn client_refuses_a_node_from_another_ca() {
    let (ca, _) = ministry();
    let rogue = TempCa::new("rogue root");
    let (scert, skey, _) = rogue.issue("ministry", Role::Ministry, "ministry");
    let server = Credentials::load(&paths(&rogue, &scert, &skey)).expect("rogue server");
    let (cert, key, _) = ca.issue("gd-transport", Role::Province, "gd-node");
    let client = Credentials::load(&paths(&ca, &cert, &key)).expect("client creds");
    let (outcome, _) = handshake(&server, client_config(&client).expect("config")).await;
    let err = outcome.expect_err("client must refuse");
    assert_eq!(explain_local_refusal(&err), Some(HandshakeRefusal::UnknownCa), "{err:?}");
    assert_eq!(explain_connection_error(&err), None);
}

#[test]
fn load_errors_name_the_file() {
    let ca = TempCa::new("root");
    let (cert, key, _) = ca.issue("a", Role::Province, "node-a");
    let (_, other_key, _) = ca.issue("b", Role::Province, "node-b");

    let mut missing = paths(&ca, &cert, &key);
    missing.key = ca.path().join("nope.key");
    let err = Credentials::load(&missing).expect_err("missing key");
    assert!(matches!(err, TlsError::Read { .. }) && err.to_string().contains("nope.key"), "{err}");

    let swapped = paths(&ca, &cert, &other_key);
    let err = Credentials::load(&swapped).expect_err("mismatch");
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");

    let mut key_as_cert = paths(&ca, &cert, &key);
    key_as_cert.cert = key.clone();
    let err = Credentials::load(&key_as_cert).expect_err("no certificate");
    assert!(matches!(err, TlsError::Pem { .. }) && err.to_string().contains("node-a.key"), "{err}");

    let mut bad_crl = paths(&ca, &cert, &key);
    bad_crl.crl = Some(cert.clone());
    let err = Credentials::load(&bad_crl).expect_err("bad crl");
    assert!(matches!(err, TlsError::Pem { .. }), "{err}");
}

#[test]
fn configs_build_without_crl() {
    let ca = TempCa::new("root");
    let (cert, key, _) = ca.issue("a", Role::Province, "node-a");
    let mut no_crl = paths(&ca, &cert, &key);
    no_crl.crl = None;
    let creds = Credentials::load(&no_crl).expect("creds");
    assert!(creds.crls().is_empty());
    assert!(!creds.reload_crl().expect("no crl to reload"));
    server_config(&creds, Arc::new(IgnoreRefusals)).expect("server config");
    client_config(&creds).expect("client config");
}

/// A bulk stream between two ferry endpoints on loopback: MTU discovery reaches large datagrams
/// and keeps them. quinn batches up to ten datagrams per segmentation-offload send; above
/// ~6.5 KB such a batch is more than one UDP send may carry, and without [`socket::SplitSends`]
/// every batch vanished, which the black-hole detector read as a path that cannot carry large
/// datagrams (back to 1,200 bytes).
/// Sends 32 MiB from a server built with `server_transport` to a client with `client_transport`
/// over ferry endpoints on loopback; returns the server's connection statistics.
async fn bulk_stream(
    server_transport: quinn::TransportConfig,
    client_transport: quinn::TransportConfig,
) -> quinn::ConnectionStats {
    const BYTES: usize = 32 << 20;
    let (ca, server) = ministry();
    let (cert, key, _) = ca.issue("gd-transport", Role::Province, "gd-node");
    let client = Credentials::load(&paths(&ca, &cert, &key)).expect("client creds");
    let mut config = server_config(&server, Arc::new(Recorder::default())).expect("server config");
    config.transport_config(Arc::new(server_transport));
    let server_ep = endpoint("127.0.0.1:0".parse().expect("addr"), Some(config)).expect("bind");
    let addr = server_ep.local_addr().expect("addr");
    let serve = tokio::spawn(async move {
        let conn = server_ep.accept().await.expect("incoming").await.expect("handshake");
        let (mut send, mut recv) = conn.accept_bi().await.expect("stream");
        recv.read_to_end(16).await.expect("request");
        let block = vec![0x5a_u8; 1 << 20];
        for _ in 0..BYTES / block.len() {
            send.write_all(&block).await.expect("write");
        }
        send.finish().expect("finish");
        let _ = send.stopped().await;
        let stats = conn.stats();
        conn.close(0u32.into(), b"done");
        stats
    });
    let client_ep = endpoint("127.0.0.1:0".parse().expect("addr"), None).expect("client bind");
    let mut client_config = client_config(&client).expect("config");
    client_config.transport_config(Arc::new(client_transport));
    let conn =
        client_ep.connect_with(client_config, addr, "ministry").expect("connect").await.expect("handshake");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(b"go").await.expect("request");
    send.finish().expect("finish");
    let got = tokio::time::timeout(StdDuration::from_secs(60), recv.read_to_end(BYTES + 1))
        .await
        .expect("stream done in time")
        .expect("read");
    assert_eq!(got.len(), BYTES);
    tokio::time::timeout(StdDuration::from_secs(10), serve)
        .await
        .expect("server done in time")
        .expect("server task")
}

/// A bulk stream between two ferry endpoints with the general settings: MTU discovery reaches
/// large datagrams and keeps them. quinn batches up to ten datagrams per segmentation-offload
/// send; above ~6.5 KB such a batch is more than one UDP send may carry, and without
/// [`socket::SplitSends`] every batch vanished, which the black-hole detector read as a path that
/// cannot carry large datagrams (back to 1,200 bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_stream_discovers_and_keeps_large_datagrams() {
    let stats = bulk_stream(transport_config(), transport_config()).await;
    assert_eq!(stats.path.black_holes_detected, 0, "{stats:?}");
    assert!(stats.path.current_mtu > 8000, "datagrams stayed small: {stats:?}");
}

/// With the loopback settings the first datagrams are full-size and no probe is sent (probes
/// are padding on the wire: ~660 KB to discover 65 KB datagrams).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_settings_start_at_full_size_without_probes() {
    let stats = bulk_stream(loopback_transport_config(), loopback_transport_config()).await;
    assert_eq!(stats.path.current_mtu, MTU_UPPER_BOUND, "{stats:?}");
    assert_eq!(stats.path.sent_plpmtud_probes, 0, "{stats:?}");
    assert_eq!(stats.path.black_holes_detected, 0, "{stats:?}");
}

#[test]
fn loopback_addresses_are_recognised() {
    for addr in ["127.0.0.1:1", "127.9.9.9:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
        assert!(is_loopback(addr.parse().expect("addr")), "{addr}");
    }
    for addr in ["10.0.0.1:1", "[::ffff:10.0.0.1]:1", "[2001:db8::1]:1", "0.0.0.0:1"] {
        assert!(!is_loopback(addr.parse().expect("addr")), "{addr}");
    }
}
