//! Why a TLS handshake was refused, seen from either side, in words an operator can act on.
//!
//! On the serving side the client-certificate verifier is wrapped ([`ObservedClientVerifier`]) so
//! every certificate it refuses is reported to a [`HandshakeObserver`] (the daemon counts them in
//! a metric labelled by [`HandshakeRefusal::as_str`]). Refusals the verifier never sees (no client
//! certificate, wrong ALPN) surface only as the failed connection's error:
//! [`observe_failed_handshake`] reports those without counting the others twice.
//!
//! On the connecting side a refusal arrives as a QUIC `CONNECTION_CLOSE` whose code is
//! `0x100 + TLS alert`; [`explain_connection_error`] maps it back. The alert is coarser than the
//! server's knowledge: `certificate_expired` (45) is sent both for an expired certificate and for
//! one not yet valid, so the client reports [`HandshakeRefusal::Expired`] for both.

use quinn::ConnectionError;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;

/// Why a handshake was refused. The variants are a bounded set, fit for a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeRefusal {
    /// The client sent no certificate.
    NoCertificate,
    /// The certificate was not issued by the ministry CA (or its revocation status is unknown).
    UnknownCa,
    /// The certificate's `notAfter` has passed.
    Expired,
    /// The certificate's `notBefore` is still ahead.
    NotYetValid,
    /// The certificate is listed in the CRL.
    Revoked,
    /// The certificate is malformed, has the wrong key usage, or its signature is wrong.
    BadCertificate,
    /// The peer does not speak this protocol version (no common ALPN).
    WrongAlpn,
    /// Any other handshake failure.
    Other,
}

impl HandshakeRefusal {
    /// Stable metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::UnknownCa => "unknown_ca",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Revoked => "revoked",
            Self::BadCertificate => "bad_certificate",
            Self::WrongAlpn => "wrong_alpn",
            Self::Other => "other",
        }
    }

    /// Whether the serving side's certificate verifier reports this refusal itself.
    pub fn seen_by_verifier(self) -> bool {
        matches!(
            self,
            Self::UnknownCa | Self::Expired | Self::NotYetValid | Self::Revoked | Self::BadCertificate
        )
    }

    fn from_rustls(err: &rustls::Error) -> Self {
        use CertificateError as C;
        match err {
            rustls::Error::InvalidCertificate(cert) => match cert {
                C::Expired | C::ExpiredContext { .. } => Self::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => Self::NotYetValid,
                C::Revoked => Self::Revoked,
                C::UnknownIssuer
                | C::UnknownRevocationStatus
                | C::ExpiredRevocationList
                | C::ExpiredRevocationListContext { .. } => Self::UnknownCa,
                _ => Self::BadCertificate,
            },
            rustls::Error::NoCertificatesPresented => Self::NoCertificate,
            _ => Self::BadCertificate,
        }
    }

    fn from_alert(alert: u8) -> Self {
        match alert {
            116 => Self::NoCertificate,
            48 => Self::UnknownCa,
            45 => Self::Expired,
            44 => Self::Revoked,
            // bad_certificate, unsupported_certificate (wrong key usage), certificate_unknown,
            // decrypt_error (bad CertificateVerify signature)
            42 | 43 | 46 | 51 => Self::BadCertificate,
            120 => Self::WrongAlpn,
            _ => Self::Other,
        }
    }
}

impl std::fmt::Display for HandshakeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Receives every handshake the serving side refuses.
pub trait HandshakeObserver: Send + Sync + std::fmt::Debug {
    fn refused(&self, reason: HandshakeRefusal);
}

/// An observer that ignores everything (for clients and tests that do not count).
#[derive(Debug, Default, Clone, Copy)]
pub struct IgnoreRefusals;

impl HandshakeObserver for IgnoreRefusals {
    fn refused(&self, _reason: HandshakeRefusal) {}
}

/// The TLS alert carried by a QUIC close code `0x100 + alert`, if it is one.
fn crypto_alert(code: quinn::TransportErrorCode) -> Option<u8> {
    let code = u64::from(code);
    if (0x100..=0x1ff).contains(&code) { u8::try_from(code - 0x100).ok() } else { None }
}

/// Classifies a failed incoming connection on the serving side (from `Incoming`/`Connecting`).
///
/// For certificate problems the verifier already told the observer; use
/// [`observe_failed_handshake`] to report only what it could not see.
pub fn classify_server_side(err: &ConnectionError) -> HandshakeRefusal {
    let code = match err {
        ConnectionError::TransportError(e) => e.code,
        ConnectionError::ConnectionClosed(close) => close.error_code,
        _ => return HandshakeRefusal::Other,
    };
    crypto_alert(code).map_or(HandshakeRefusal::Other, HandshakeRefusal::from_alert)
}

/// Reports a failed incoming handshake to `observer` unless the verifier already did.
pub fn observe_failed_handshake(err: &ConnectionError, observer: &dyn HandshakeObserver) {
    let reason = classify_server_side(err);
    if !reason.seen_by_verifier() {
        observer.refused(reason);
    }
}

/// Why the node we connected to refused us, when `err` is such a refusal (a close sent by the
/// peer with a TLS alert code). Expired and not-yet-valid both come back as
/// [`HandshakeRefusal::Expired`]: the alert does not tell them apart.
pub fn explain_connection_error(err: &ConnectionError) -> Option<HandshakeRefusal> {
    match err {
        ConnectionError::ConnectionClosed(close) => {
            crypto_alert(close.error_code).map(HandshakeRefusal::from_alert)
        }
        _ => None,
    }
}

/// Why we refused the node's certificate, when `err` is our own TLS stack failing the handshake
/// (for example the node's certificate is from another CA or revoked).
pub fn explain_local_refusal(err: &ConnectionError) -> Option<HandshakeRefusal> {
    match err {
        ConnectionError::TransportError(e) => crypto_alert(e.code).map(HandshakeRefusal::from_alert),
        _ => None,
    }
}

/// One operator-friendly sentence for a refusal of our certificate by a node.
pub fn refusal_message(reason: HandshakeRefusal) -> &'static str {
    match reason {
        HandshakeRefusal::NoCertificate => {
            "the node requires a client certificate and we sent none; pass --cert and --key"
        }
        HandshakeRefusal::UnknownCa => {
            "the node does not trust our certificate's issuer (or cannot tell whether it is revoked); use a certificate issued by the ministry CA the node trusts"
        }
        HandshakeRefusal::Expired | HandshakeRefusal::NotYetValid => {
            "the node refused our certificate: it has expired or is not yet valid; check the clock and `ferry pki issue` a new one"
        }
        HandshakeRefusal::Revoked => {
            "the node refused our certificate: it has been revoked; ask the ministry for a new one (`ferry pki issue`)"
        }
        HandshakeRefusal::BadCertificate => {
            "the node refused our certificate as malformed or not allowed for this use; check that --cert and --key belong together"
        }
        HandshakeRefusal::WrongAlpn => {
            "the node speaks another ferry protocol version; upgrade the older side"
        }
        HandshakeRefusal::Other => "the TLS handshake with the node failed",
    }
}

/// A client-certificate verifier that reports every refusal to an observer, then refuses.
#[derive(Debug)]
pub(crate) struct ObservedClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) observer: Arc<dyn HandshakeObserver>,
}

impl ObservedClientVerifier {
    fn observe<T>(&self, result: Result<T, rustls::Error>) -> Result<T, rustls::Error> {
        if let Err(err) = &result {
            self.observer.refused(HandshakeRefusal::from_rustls(err));
        }
        result
    }
}

impl ClientCertVerifier for ObservedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.observe(self.inner.verify_client_cert(end_entity, intermediates, now))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.observe(self.inner.verify_tls12_signature(message, cert, dss))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.observe(self.inner.verify_tls13_signature(message, cert, dss))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::TransportErrorCode;

    fn closed_with_alert(alert: u8) -> ConnectionError {
        ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: TransportErrorCode::crypto(alert),
            frame_type: None,
            reason: bytes::Bytes::new(),
        })
    }

    #[test]
    fn alerts_map_to_refusals_on_both_sides() {
        let cases = [
            (116, HandshakeRefusal::NoCertificate),
            (48, HandshakeRefusal::UnknownCa),
            (45, HandshakeRefusal::Expired),
            (44, HandshakeRefusal::Revoked),
            (42, HandshakeRefusal::BadCertificate),
            (120, HandshakeRefusal::WrongAlpn),
            (40, HandshakeRefusal::Other),
        ];
        for (alert, want) in cases {
            assert_eq!(explain_connection_error(&closed_with_alert(alert)), Some(want));
            let local = ConnectionError::TransportError(TransportErrorCode::crypto(alert).into());
            assert_eq!(classify_server_side(&local), want);
            assert_eq!(explain_local_refusal(&local), Some(want));
            assert_eq!(explain_connection_error(&local), None, "a local failure is not the peer's refusal");
        }
        assert_eq!(explain_connection_error(&ConnectionError::TimedOut), None);
        assert_eq!(classify_server_side(&ConnectionError::TimedOut), HandshakeRefusal::Other);
    }

    #[test]
    fn labels_are_distinct_and_messages_mention_the_cause() {
        let all = [
            HandshakeRefusal::NoCertificate,
            HandshakeRefusal::UnknownCa,
            HandshakeRefusal::Expired,
            HandshakeRefusal::NotYetValid,
            HandshakeRefusal::Revoked,
            HandshakeRefusal::BadCertificate,
            HandshakeRefusal::WrongAlpn,
            HandshakeRefusal::Other,
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), all.len());
        assert!(refusal_message(HandshakeRefusal::Expired).contains("not yet valid"));
        assert!(refusal_message(HandshakeRefusal::Revoked).contains("revoked"));
    }
}
