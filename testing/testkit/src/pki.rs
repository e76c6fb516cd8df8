//! A development CA and the certificates the gRPC services present to each
//! other (mutual TLS; see `shipshape_runtime::grpc_tls`), or a broker to its
//! clients, made for each stack and kept in its log directory, never in the
//! repository.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use shipshape_runtime::grpc_tls::TlsFiles;

use crate::broker::BrokerTls;

/// The services that serve or call gRPC, each with a certificate naming it.
pub const GRPC_PEERS: [&str; 3] = ["gateway", "order", "inventory"];

/// A CA and the certificates it issued, as PEM files in one directory:
/// `ca.crt`, and `<name>.crt` with `<name>.key` for each of
/// [`GRPC_PEERS`]. The CA's own key stays in memory, so nothing can sign
/// with it once the stack is gone.
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// A new CA named `name`, with a certificate for each of
    /// [`GRPC_PEERS`], written into `dir` (created if missing; keys
    /// readable by their owner only).
    pub fn create(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let pki = Self::ca_only(dir, name)?;
        for peer in GRPC_PEERS {
            let (certificate, key) = pki.issue(peer)?;
            write(&pki.certificate_path(peer), certificate.as_bytes(), false)?;
            write(&pki.key_path(peer), key.as_bytes(), true)?;
        }
        Ok(pki)
    }

    /// A new CA named `name`, with only `ca.crt` written into `dir`
    /// (created if missing); certificates are issued on demand.
    pub fn ca_only(dir: &Path, name: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)
            .context("making the development CA")?;
        let pki = Self {
            dir: dir.to_owned(),
            ca,
        };
        write(&pki.ca_path(), pki.ca.pem().as_bytes(), false)?;
        Ok(pki)
    }

    /// A certificate and key (PEM) naming `name`, for a server and a
    /// client alike.
    pub fn issue(&self, name: &str) -> anyhow::Result<(String, String)> {
        self.issue_for(name, &[name])
    }

    /// A certificate and key (PEM) with the common name `name` and a
    /// subject alternative name for each of `hosts` (an IP address where
    /// one parses, a DNS name otherwise), for a server and a client alike.
    pub fn issue_for(&self, name: &str, hosts: &[&str]) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let hosts: Vec<String> = hosts.iter().map(|host| (*host).to_owned()).collect();
        let mut params = CertificateParams::new(hosts)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let certificate = params
            .signed_by(&key, &self.ca)
            .with_context(|| format!("issuing the certificate of {name}"))?;
        Ok((certificate.pem(), key.serialize_pem()))
    }

    /// What a process named `name` presents and trusts: a certificate this
    /// CA issues for it now, and this CA.
    pub fn tls_files(&self, name: &str) -> anyhow::Result<TlsFiles> {
        let (certificate, key) = self.issue(name)?;
        Ok(TlsFiles::from_pem(
            certificate.into_bytes(),
            key.into_bytes(),
            self.ca.pem().into_bytes(),
        ))
    }

    /// What a broker on 127.0.0.1 presents (SASL_SSL): a certificate this
    /// CA issues now for `127.0.0.1` and `localhost`, and this CA, which
    /// its clients trust at [`Pki::ca_path`].
    pub fn broker_tls(&self) -> anyhow::Result<BrokerTls> {
        let (certificate, key) = self.issue_for("broker", &["127.0.0.1", "localhost"])?;
        Ok(BrokerTls {
            certificate,
            key,
            ca: self.ca.pem(),
            ca_path: self.ca_path(),
        })
    }

    /// `ca.crt`: `GRPC_TLS_CA` of every gRPC peer, or `KAFKA_SSL_CA_LOCATION`
    /// of a broker's clients.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `<name>.crt`: `GRPC_TLS_CERT` of the peer `name`.
    pub fn certificate_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }

    /// `<name>.key`: `GRPC_TLS_KEY` of the peer `name`.
    pub fn key_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
}

fn write(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .with_context(|| format!("writing {}", path.display()))
}
