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

    /// A CA and a node certificate for 127.0.0.1, in memory: (chain, key, roots).
    fn material() -> (
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        RootCertStore,
    ) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &issuer).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        (vec![cert.der().clone()], key, roots)
    }

    fn tls(
        m: &(
            Vec<CertificateDer<'static>>,
            PrivateKeyDer<'static>,
            RootCertStore,
        ),
    ) -> ClusterTls {
        ClusterTls::from_parts(m.0.clone(), m.1.clone_key(), m.2.clone()).unwrap()
    }

    /// Does a client with `client`'s config get a TLS connection through `addr`'s listener
    /// (handshake done and accepted)?
    async fn handshake(client: &ClusterTls, addr: SocketAddr, listener: &mut TlsListener) -> bool {
        use axum::serve::Listener;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let connect = async {
            let tcp = TcpStream::connect(addr).await.ok()?;
            let mut s = client.connector().connect(name, tcp).await.ok()?;
            // TLS 1.3: the server checks the client certificate after the client finished;
            // a refusal arrives as an alert on the first read.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"ping").await.ok()?;
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.ok()?;
            Some(())
        };
        let serve = async {
            let (mut io, _) = listener.accept().await;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut b = [0u8; 4];
            io.read_exact(&mut b).await.ok()?;
            io.write_all(b"pong").await.ok()?;
            io.flush().await.ok()?;
            Some(())
        };
        // A refused client ends the wait at once (the listener then never yields a stream).
        let failed = tokio::sync::Notify::new();
        let connect = async {
            let r = connect.await;
            if r.is_none() {
                failed.notify_one();
            }
            r
        };
        let serve = async {
            tokio::select! {
                r = serve => r,
                _ = failed.notified() => None,
            }
        };
        let r = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(connect, serve)
        })
        .await;
        matches!(r, Ok((Some(()), Some(()))))
    }

    /// Mutual TLS: a node of the same CA gets through; a client of another CA, or without a
    /// certificate, is refused. Stalled connections beyond [`HANDSHAKES_MAX`] are closed at
    /// once, and while they stall a good peer still gets through once slots are free.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_cluster_ca_gets_through_and_stalled_handshakes_are_bounded() {
        let ours = material();
        let theirs = material();
        let server = tls(&ours);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut l = TlsListener::new(tcp, server.acceptor()).unwrap();

        assert!(handshake(&tls(&ours), addr, &mut l).await, "same CA");
        // Another CA: our server refuses its certificate (and it refuses ours).
        let foreign = tls(&theirs);
        assert!(!foreign_gets_through(&foreign, addr).await, "another CA");
        // Trusting our CA but presenting no certificate.
        let anonymous = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(ours.2.clone())
            .with_no_client_auth();
        let anonymous = ClusterTls {
            server: server.server.clone(),
            client: Arc::new(anonymous),
        };
        assert!(
            !foreign_gets_through(&anonymous, addr).await,
            "no certificate"
        );

        // HANDSHAKES_MAX connections that never say hello, then one more: closed at once.
        let mut stalled = Vec::new();
        for _ in 0..HANDSHAKES_MAX {
            stalled.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut extra = TcpStream::connect(addr).await.unwrap();
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(4), extra.read(&mut b)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "connection {} past the bound was not closed at once: {closed:?}",
            HANDSHAKES_MAX + 1
        );
        drop(stalled);
        // Slots free again: a good peer gets through.
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while !handshake(&tls(&ours), addr, &mut l).await {
            assert!(std::time::Instant::now() < end, "no slot came free");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client that must not get a working TLS session: handshake or first read fails.
    async fn foreign_gets_through(client: &ClusterTls, addr: SocketAddr) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let attempt = async {
            let tcp = TcpStream::connect(addr).await.ok()?;
            let mut s = client.connector().connect(name, tcp).await.ok()?;
            s.write_all(b"ping").await.ok()?;
            let mut b = [0u8; 1];
            match s.read(&mut b).await {
                Ok(n) if n > 0 => Some(()),
                _ => None,
            }
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(10), attempt).await,
            Ok(Some(()))
        )
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
