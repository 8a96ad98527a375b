//! Long-lived self-signed identities and their SHA-256 fingerprints.

use crate::{Result, TransportError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// SHA-256 of a certificate's DER encoding: what each party prints and the other pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = TransportError;

    /// Parses 64 hex digits; `:` separators and surrounding blanks are ignored.
    fn from_str(s: &str) -> Result<Self> {
        let clean: String = s.trim().chars().filter(|&c| c != ':').collect();
        let bytes = hex::decode(&clean)
            .map_err(|e| TransportError::Config(format!("fingerprint {s:?} is not hex: {e}")))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            TransportError::Config(format!(
                "fingerprint {s:?} has {} bytes, a SHA-256 fingerprint has 32 (64 hex digits)",
                b.len()
            ))
        })?;
        Ok(Self(arr))
    }
}

/// A party's certificate and private key (ECDSA P-256, self-signed, made with rcgen).
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    fingerprint: Fingerprint,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

const CERT_FILE: &str = "cert.der";
const KEY_FILE: &str = "key.der";

impl Identity {
    /// A fresh identity kept only in memory (for `duet demo` and tests).
    pub fn generate() -> Result<Self> {
        let ck = rcgen::generate_simple_self_signed(vec!["duet".to_string()])
            .map_err(|e| TransportError::Config(format!("cannot generate a certificate: {e}")))?;
        let cert = ck.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
        Ok(Self::from_parts(cert, key))
    }

    fn from_parts(cert: CertificateDer<'static>, key: PrivatePkcs8KeyDer<'static>) -> Self {
        let fingerprint = Fingerprint::of_der(&cert);
        Self {
            cert,
            key,
            fingerprint,
        }
    }

    /// Loads the identity kept in `dir` (`cert.der`, `key.der`), creating the folder and a new
    /// identity on first use. The key file is written with mode 0600.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        if cert_path.exists() || key_path.exists() {
            let cert = std::fs::read(&cert_path).map_err(|e| {
                TransportError::Config(format!("cannot read {}: {e}", cert_path.display()))
            })?;
            let key = std::fs::read(&key_path).map_err(|e| {
                TransportError::Config(format!("cannot read {}: {e}", key_path.display()))
            })?;
            let id = Self::from_parts(CertificateDer::from(cert), PrivatePkcs8KeyDer::from(key));
            id.check_key_matches()
                .map_err(|e| TransportError::Config(format!("{}: {e}", dir.display())))?;
            return Ok(id);
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            TransportError::Config(format!(
                "cannot create state directory {}: {e}",
                dir.display()
            ))
        })?;
        let id = Self::generate()?;
        std::fs::write(&cert_path, id.cert.as_ref())?;
        write_private(&key_path, id.key.secret_pkcs8_der())?;
        Ok(id)
    }

    /// Checks that the key parses and belongs to the certificate (a TLS config accepts it).
    fn check_key_matches(&self) -> Result<()> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let key = provider
            .key_provider
            .load_private_key(self.key_der())
            .map_err(|e| TransportError::Config(format!("key.der is not a usable key: {e}")))?;
        let ck = rustls::sign::CertifiedKey::new(vec![self.cert.clone()], key);
        ck.keys_match()
            .map_err(|e| TransportError::Config(format!("key.der does not match cert.der: {e}")))
    }

    /// This party's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    pub(crate) fn cert(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    pub(crate) fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes)?;
    Ok(())
}
