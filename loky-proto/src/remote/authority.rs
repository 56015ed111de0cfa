//! The certificate authority an executor makes for itself, and the TLS
//! configurations of both ends.
//!
//! Each executor makes its own authority when it starts listening, signs a
//! server certificate for its listener and one client certificate per
//! launch, and trusts nothing else. Keys are ECDSA P-256 (a key and a
//! certificate take well under a millisecond). Only TLS 1.3 is spoken, with
//! no session resumption: every connection presents its certificate.
//!
//! The worker checks the executor's certificate against the authority in its
//! ticket and the fixed name [`SERVER_NAME`], not against the host it
//! dialled: the authority exists only in this executor, so the name adds
//! nothing, and clusters reach a login node under many names.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::SERVER_NAME;
use super::ticket::Ticket;

/// Why credentials or a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A certificate or key could not be generated.
    #[error("cannot make {what}")]
    Generate {
        /// What was being made.
        what: &'static str,
        /// The generator's error.
        #[source]
        source: rcgen::Error,
    },
    /// Certificates or keys were refused by TLS.
    #[error("cannot configure TLS with {what}")]
    Tls {
        /// What was being configured.
        what: &'static str,
        /// The TLS library's error.
        #[source]
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built.
    #[error("cannot build the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

/// A certificate and its private key.
pub struct Identity {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    /// Its private key (PKCS#8 DER).
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cert", &format_args!("{} bytes", self.cert.len()))
            .field("key", &format_args!("<redacted>"))
            .finish()
    }
}

/// An executor's own certificate authority, with the TLS configuration of
/// its listener.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    server: Arc<ServerConfig>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new authority, with a server certificate for the listener.
    pub fn new() -> Result<Authority, CredentialError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "loky-rs executor authority");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let key = KeyPair::generate().map_err(generate("the authority's key"))?;
        let issuer =
            CertifiedIssuer::self_signed(params, key).map_err(generate("the authority"))?;
        let server = issue(&issuer, SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth)?;
        let server = server_config(issuer.der().clone(), server)?;
        Ok(Authority { issuer, server })
    }

    /// The authority's certificate (DER), which workers trust.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        self.issuer.der()
    }

    /// A fresh client certificate and key for one launch; `name` (such as
    /// `launch-17`) becomes its common name, for messages.
    pub fn issue_client(&self, name: &str) -> Result<Identity, CredentialError> {
        issue(&self.issuer, name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// The TLS configuration of the executor's listener: its certificate,
    /// and a client certificate from this authority required.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }
}

fn generate(what: &'static str) -> impl FnOnce(rcgen::Error) -> CredentialError {
    move |source| CredentialError::Generate { what, source }
}

fn tls(what: &'static str) -> impl FnOnce(rustls::Error) -> CredentialError {
    move |source| CredentialError::Tls { what, source }
}

/// Issues an end-entity certificate for `name` and `usage`.
fn issue(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> Result<Identity, CredentialError> {
    let mut params =
        CertificateParams::new(vec![name.to_owned()]).map_err(generate("a certificate name"))?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(generate("a certificate key"))?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(generate("a certificate"))?;
    Ok(Identity {
        cert: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    })
}

/// The cryptography of both ends: *ring*, which builds with a C compiler
/// alone.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: CertificateDer<'static>) -> Result<Arc<RootCertStore>, CredentialError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca).map_err(tls("the authority's certificate"))?;
    Ok(Arc::new(roots))
}

fn server_config(
    ca: CertificateDer<'static>,
    server: Identity,
) -> Result<Arc<ServerConfig>, CredentialError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone())
        .build()
        .map_err(CredentialError::Verifier)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls("TLS 1.3"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server.cert], PrivateKeyDer::Pkcs8(server.key))
        .map_err(tls("the server certificate"))?;
    // Every connection proves itself with its certificate.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// The TLS configuration of a worker holding `ticket`: it trusts only the
/// ticket's authority and presents the ticket's certificate.
pub fn client_config(ticket: &Ticket) -> Result<Arc<ClientConfig>, CredentialError> {
    let ca = CertificateDer::from(ticket.ca.clone());
    let cert = CertificateDer::from(ticket.cert.clone());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ticket.key.clone()));
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls("TLS 1.3"))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(vec![cert], key)
        .map_err(tls("the ticket's certificate"))?;
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// The name a worker expects in the executor's certificate.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("SERVER_NAME is a valid DNS name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_launch_gets_a_different_identity() {
        let authority = Authority::new().unwrap();
        let a = authority.issue_client("launch-1").unwrap();
        let b = authority.issue_client("launch-2").unwrap();
        assert_ne!(a.cert, b.cert);
        assert_ne!(a.key.secret_pkcs8_der(), b.key.secret_pkcs8_der());
        assert!(format!("{a:?}").contains("<redacted>"));
    }

    #[test]
    fn two_executors_have_different_authorities() {
        let a = Authority::new().unwrap();
        let b = Authority::new().unwrap();
        assert_ne!(a.certificate(), b.certificate());
    }
}
