//! rustls verifiers that accept exactly one pinned certificate.
//!
//! Both directions check (1) that the SHA-256 of the peer's end-entity certificate equals the
//! pinned fingerprint and (2) the handshake signature with the certificate's key, so a peer
//! that replays a certificate without its key is refused. Names, validity dates and CAs play no
//! role: the pin is the trust anchor.

use super::identity::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use std::sync::{Arc, Mutex};

/// Accepts only a certificate with the pinned fingerprint; remembers the last one seen so that
/// a refusal can be reported with both fingerprints.
///
/// The client checks the pin inside the TLS handshake (it never sends its own certificate to
/// a server it does not pin; the server learns the reason from the TLS alert's close reason).
/// The server defers the comparison (`Pin::Deferred`): the handshake signature is still
/// verified against the presented certificate, and the listener compares the fingerprint
/// before anything else happens on the connection, then refuses with an application close
/// whose reason the client prints (see `QuicListener::accept`).
#[derive(Debug)]
pub(crate) struct PinnedVerifier {
    expected: Fingerprint,
    pin: Pin,
    seen: Arc<Mutex<Option<Fingerprint>>>,
    provider: Arc<CryptoProvider>,
}

/// When the pinned fingerprint is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pin {
    /// In the TLS handshake (the client's check of the server).
    InHandshake,
    /// After it, by the caller (the server's check of the client).
    Deferred,
}

impl PinnedVerifier {
    pub(crate) fn new(
        expected: Fingerprint,
        pin: Pin,
        provider: Arc<CryptoProvider>,
    ) -> (Arc<Self>, Arc<Mutex<Option<Fingerprint>>>) {
        let seen = Arc::new(Mutex::new(None));
        (
            Arc::new(Self {
                expected,
                pin,
                seen: seen.clone(),
                provider,
            }),
            seen,
        )
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        let got = Fingerprint::of_der(end_entity);
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(got);
        }
        if got == self.expected || self.pin == Pin::Deferred {
            Ok(())
        } else {
            // the text travels to the server as the reason of the TLS alert's close
            Err(Error::General(format!(
                "the client pins another server certificate (expected {}, seen {got})",
                self.expected
            )))
        }
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for PinnedVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}
