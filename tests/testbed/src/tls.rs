//! TLS at the edge as a user sees it: a CA that signs server certificates (a fresh key and
//! serial each time, as a cert-manager renewal makes them), and a TLS client on the internet
//! that reports the certificate the VPS presented, checked against that CA.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::TestbedError;

fn cert_error(e: &rcgen::Error) -> TestbedError {
    TestbedError::Command {
        command: "generating a certificate".into(),
        detail: e.to_string(),
    }
}

/// A test CA.
#[derive(Debug)]
pub struct Ca {
    /// The CA's certificate (PEM), for clients to trust.
    pub pem: String,
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
}

impl Ca {
    /// A new CA with its own key.
    pub fn new() -> Result<Self, TestbedError> {
        let key = rcgen::KeyPair::generate().map_err(|e| cert_error(&e))?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| cert_error(&e))?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tunnel test CA");
        let pem = params.self_signed(&key).map_err(|e| cert_error(&e))?.pem();
        Ok(Self { pem, key, params })
    }

    /// A server certificate for `names` with a new key and serial: (certificate PEM, key PEM).
    pub fn leaf(&self, names: &[&str]) -> Result<(String, String), TestbedError> {
        let key = rcgen::KeyPair::generate().map_err(|e| cert_error(&e))?;
        let owned: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(owned).map_err(|e| cert_error(&e))?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("leaf"),
        );
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| cert_error(&e))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The DER of the first certificate in `pem`.
pub fn pem_der(pem: &str) -> Result<Vec<u8>, TestbedError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| TestbedError::Command {
            command: "reading a PEM".into(),
            detail: "no certificate in it".into(),
        })
}

/// A client configuration trusting only `ca_pem`.
fn client_config(ca_pem: &str) -> std::io::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(std::io::Error::other)?)
            .map_err(std::io::Error::other)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// One TLS exchange with `addr` (call it in the namespace of the client): the handshake for
/// `sni` verified against `ca_pem` (2 s to connect, 5 s for each read), then `send`, then
/// everything the server answered until it closed. Returns the DER of the certificate the
/// server presented, and the answer.
pub fn exchange(
    addr: SocketAddr,
    sni: &str,
    ca_pem: &str,
    send: &[u8],
) -> std::io::Result<(Vec<u8>, String)> {
    exchange_with(addr, sni, Arc::new(client_config(ca_pem)?), send)
}

/// [`exchange`] with a client configuration of the caller's (e.g. one with a client
/// certificate).
pub fn exchange_with(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    send: &[u8],
) -> std::io::Result<(Vec<u8>, String)> {
    let name = ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    let cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| std::io::Error::other("the server presented no certificate"))?;
    tls.write_all(send)?;
    let mut out = String::new();
    match tls.read_to_string(&mut out) {
        Ok(_) => {}
        // Envoy may close without close_notify once the backend is done.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok((cert, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_leaf_is_a_new_certificate_the_ca_signed() {
        let ca = Ca::new().unwrap();
        let (a, _) = ca.leaf(&["web.example.test"]).unwrap();
        let (b, _) = ca.leaf(&["web.example.test"]).unwrap();
        assert_ne!(pem_der(&a).unwrap(), pem_der(&b).unwrap());
        assert!(client_config(&ca.pem).is_ok());
        assert!(pem_der("not a pem").is_err());
    }
}
