//! `cluster.tls`: mutual TLS on the cluster port and the mesh.
//!
//! [`ClusterTls::load`] reads the three PEM files once at start-up; every failure names the
//! JSON path (`cluster.tls.cert`, `.key`, `.ca`) and the reason. From them come one rustls
//! server config (presents this node's certificate, *requires* a client certificate signed by
//! the cluster CA) and one client config (trusts only the cluster CA, presents this node's
//! certificate). The cluster port, the mesh and the bench all use these two.
//!
//! [`TlsListener`] puts the server side in front of axum: it accepts TCP, runs each handshake in
//! its own task under [`HANDSHAKE_TIMEOUT`] (a peer that never finishes cannot hold the accept
//! loop), at most [`HANDSHAKES_MAX`] at once, and logs a refused handshake (peer address and
//! rustls' reason — never a secret).
//!
//! The provider is aws-lc-rs, the one reqwest already links; the cluster secret is still checked
//! on every request on top of TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use crate::config::ClusterTlsConfig;

/// rustls' client side, for callers that configure an HTTP client with [`ClusterTls::client`].
pub use rustls as rustls_client;

/// Deadline of one server-side handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once on one listener; further connections are closed at once.
pub const HANDSHAKES_MAX: usize = 256;
/// Finished handshakes waiting for the HTTP server to take them.
pub const HANDSHAKES_READY_MAX: usize = 64;

/// The rustls configs built from `cluster.tls`.
#[derive(Clone)]
pub struct ClusterTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls { .. }")
    }
}

/// The process's one crypto provider for cluster TLS.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(path_key: &str, file: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(Path::new(file))
        .map_err(|e| anyhow::anyhow!("{path_key}: cannot read `{file}`: {e}"))
}

fn certs(path_key: &str, file: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(path_key, file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{path_key}: `{file}` is not valid PEM: {e}"))?;
    if certs.is_empty() {
        anyhow::bail!("{path_key}: `{file}` holds no CERTIFICATE block");
    }
    Ok(certs)
}

impl ClusterTls {
    /// Read and check the PEM files of `cluster.tls`.
    pub fn load(cfg: &ClusterTlsConfig) -> anyhow::Result<ClusterTls> {
        let chain = certs("cluster.tls.cert", &cfg.cert)?;
        let key_pem = read("cluster.tls.key", &cfg.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            anyhow::anyhow!(
                "cluster.tls.key: `{}` holds no usable private key: {e}",
                cfg.key
            )
        })?;
        let mut roots = RootCertStore::empty();
        for c in certs("cluster.tls.ca", &cfg.ca)? {
            roots.add(c).map_err(|e| {
                anyhow::anyhow!("cluster.tls.ca: `{}` is not a usable CA: {e}", cfg.ca)
            })?;
        }
        Self::from_parts(chain, key, roots)
    }

    /// The configs from parsed material (errors still name the config keys).
    pub fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: RootCertStore,
    ) -> anyhow::Result<ClusterTls> {
        let p = provider();
        let roots = Arc::new(roots);
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), p.clone())
                .build()
                .map_err(|e| anyhow::anyhow!("cluster.tls.ca: {e}"))?;
        let server = ServerConfig::builder_with_provider(p.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("cluster.tls: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                anyhow::anyhow!(
                    "cluster.tls.key: does not fit cluster.tls.cert or is unusable: {e}"
                )
            })?;
        let client = ClientConfig::builder_with_provider(p)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("cluster.tls: {e}"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cluster.tls.key: does not fit cluster.tls.cert or is unusable: {e}"
                )
            })?;
        Ok(ClusterTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }
}

/// The peer address of a cluster-port connection, plain or TLS (axum's `ConnectInfo`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>>
    for PeerAddr
{
    fn connect_info(s: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        PeerAddr(*s.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for PeerAddr
{
    fn connect_info(s: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        PeerAddr(*s.remote_addr())
    }
}

/// A TCP listener whose connections come out TLS-terminated (see the module doc).
pub struct TlsListener {
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl TlsListener {
    pub fn new(tcp: TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(HANDSHAKES_READY_MAX);
        let slots = Arc::new(Semaphore::new(HANDSHAKES_MAX));
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster port: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "cluster port: {HANDSHAKES_MAX} TLS handshakes in progress; connection closed");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        // Keyed by IP (the port changes per attempt), so the peer-log
                        // throttle keeps one line per 10 s for a peer that keeps retrying.
                        Ok(Err(e)) => tracing::warn!(
                            peer = %peer.ip(),
                            reason = %e,
                            "refused a cluster connection: TLS handshake failed (is its \
                             certificate signed by this cluster's cluster.tls.ca?)"
                        ),
                        Err(_) => tracing::debug!(%peer, "cluster port: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept loop is gone (only when the listener is dropped): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    /// Each bad file is refused naming its key and the reason.
    #[test]
    fn bad_files_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem").to_string_lossy().into_owned();
        let junk = write(dir.path(), "junk.pem", "not pem at all\n");
        let cfg = |cert: &str, key: &str, ca: &str| ClusterTlsConfig {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
        };
        // (config, expected key in the error, expected reason fragment)
        let cases = [
            (
                cfg(&missing, &junk, &junk),
                "cluster.tls.cert",
                "cannot read",
            ),
            (
                cfg(&junk, &junk, &junk),
                "cluster.tls.cert",
                "no CERTIFICATE",
            ),
        ];
        for (c, key, why) in cases {
            let e = ClusterTls::load(&c).unwrap_err().to_string();
            assert!(e.starts_with(key) && e.contains(why), "{e}");
        }
    }
}
