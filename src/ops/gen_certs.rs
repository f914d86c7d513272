//! `openclaw-node cluster gen-certs DIR`: a cluster CA and one certificate per node for
//! `cluster.tls`, for a quick start (an operator with a PKI uses its own).
//!
//! Writes `ca.pem`, `ca-key.pem` and `<name>.pem` / `<name>-key.pem` per node (keys mode 0600),
//! then prints the `cluster.tls` snippet each node pastes. Every node certificate is valid for
//! both TLS server and client auth (the cluster port and the mesh are mutual TLS), with SANs:
//! the node's name, `localhost`, `127.0.0.1` and every `--ips` address. Keys are ECDSA P-256;
//! validity is 10 years from today. Refuses to overwrite an existing CA (`--force` does).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::Datelike;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::cli::GenCertsArgs;

/// Most node certificates one run writes.
pub const NODES_MAX: usize = 256;
/// Years a generated certificate is valid.
const VALID_YEARS: i32 = 10;

/// The node names: `--names` as given, else `node-1 ..= node-N`.
pub fn node_names(nodes: Option<usize>, names: &[String]) -> Result<Vec<String>, String> {
    let out: Vec<String> = match (nodes, names.is_empty()) {
        (Some(_), false) => return Err("give --nodes or --names, not both".into()),
        (None, true) => return Err("give --nodes N or --names a,b,c".into()),
        (Some(n), true) => (1..=n).map(|i| format!("node-{i}")).collect(),
        (None, false) => names.iter().map(|s| s.trim().to_string()).collect(),
    };
    if out.is_empty() || out.len() > NODES_MAX {
        return Err(format!(
            "between 1 and {NODES_MAX} nodes, got {}",
            out.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for n in &out {
        let ok = !n.is_empty()
            && n.len() <= 63
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !n.starts_with(['-', '.']);
        if !ok {
            return Err(format!(
                "`{n}` is not a usable node name (a host name: letters, digits, `-`, `.`)"
            ));
        }
        if n == "ca" {
            return Err("`ca` is reserved for the CA's files".into());
        }
        if !seen.insert(n.clone()) {
            return Err(format!("`{n}` is given twice"));
        }
    }
    Ok(out)
}

/// What one run wrote: the CA and each node's (name, cert, key) paths.
#[derive(Debug, Clone)]
pub struct Written {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub nodes: Vec<(String, PathBuf, PathBuf)>,
}

fn write_file(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    if secret {
        o.mode(0o600);
    }
    let mut f = o
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Generate the CA and the node certificates into `dir`.
pub fn generate(
    dir: &Path,
    names: &[String],
    ips: &[IpAddr],
    force: bool,
) -> anyhow::Result<Written> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    if !force && (ca_path.exists() || ca_key_path.exists()) {
        anyhow::bail!(
            "{} already holds a CA (ca.pem / ca-key.pem): nodes trusting it would stop trusting \
             the new one; pass --force to replace it, or use another directory",
            dir.display()
        );
    }
    let today = chrono::Utc::now().date_naive();
    let (y, m, d) = (today.year(), today.month() as u8, today.day() as u8);
    let validity = |p: &mut CertificateParams| {
        p.not_before = rcgen::date_time_ymd(y, m, d);
        p.not_after = rcgen::date_time_ymd(y + VALID_YEARS, m, d.min(28));
    };

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "openclaw cluster CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key).context("signing the CA")?;
    write_file(&ca_path, &ca_cert.pem(), false)?;
    write_file(&ca_key_path, &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut nodes = Vec::new();
    for name in names {
        let key = KeyPair::generate().with_context(|| format!("generating {name}'s key"))?;
        let mut sans = vec![name.clone()];
        if name != "localhost" {
            sans.push("localhost".into());
        }
        let mut p = CertificateParams::new(sans)
            .with_context(|| format!("`{name}` as a certificate name"))?;
        let mut all_ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
        for ip in ips {
            if !all_ips.contains(ip) {
                all_ips.push(*ip);
            }
        }
        p.subject_alt_names
            .extend(all_ips.into_iter().map(SanType::IpAddress));
        p.distinguished_name.push(DnType::CommonName, name.as_str());
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut p);
        let cert = p
            .signed_by(&key, &issuer)
            .with_context(|| format!("signing {name}'s certificate"))?;
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        write_file(&c, &cert.pem(), false)?;
        write_file(&k, &key.serialize_pem(), true)?;
        nodes.push((name.clone(), c, k));
    }
    Ok(Written {
        ca: ca_path,
        ca_key: ca_key_path,
        nodes,
    })
}

/// The `cluster.tls` snippet for one node.
pub fn snippet(ca: &Path, cert: &Path, key: &Path) -> serde_json::Value {
    serde_json::json!({"cluster": {"tls": {
        "cert": cert.display().to_string(),
        "key": key.display().to_string(),
        "ca": ca.display().to_string(),
    }}})
}

pub fn run(a: GenCertsArgs) -> anyhow::Result<i32> {
    let names = node_names(a.nodes, &a.names).map_err(|e| anyhow::anyhow!(e))?;
    let dir = if a.dir.is_absolute() {
        a.dir.clone()
    } else {
        std::env::current_dir()
            .context("the current directory")?
            .join(&a.dir)
    };
    let w = generate(&dir, &names, &a.ips, a.force)?;
    println!(
        "wrote {} and {} (keep the CA key off the nodes), and for each node its certificate and key:",
        w.ca.display(),
        w.ca_key.display()
    );
    for (name, cert, key) in &w.nodes {
        println!(
            "\n# {name}: copy {}, {} and {} to it, then in its openclaw.json:",
            cert.display(),
            key.display(),
            w.ca.display()
        );
        let s = serde_json::to_string_pretty(&snippet(&w.ca, cert, key))?;
        println!("{s}");
    }
    println!(
        "\nEvery node keeps OPENCLAW_CLUSTER_SECRET as well: TLS authenticates the machines, the \
         secret the cluster."
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openclaw_server::cluster::tls::ClusterTls;
    use openclaw_server::config::ClusterTlsConfig;

    #[test]
    fn names_from_flags() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // (--nodes, --names, Ok(names) or Err(fragment))
        type Case = (
            Option<usize>,
            Vec<String>,
            Result<Vec<String>, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (Some(3), vec![], Ok(s(&["node-1", "node-2", "node-3"]))),
            (None, s(&["gw-a", "gw-b"]), Ok(s(&["gw-a", "gw-b"]))),
            (Some(2), s(&["a"]), Err("not both")),
            (None, vec![], Err("--nodes N")),
            (Some(0), vec![], Err("between 1")),
            (Some(NODES_MAX + 1), vec![], Err("between 1")),
            (None, s(&["a", "a"]), Err("twice")),
            (None, s(&["ca"]), Err("reserved")),
            (None, s(&["bad name"]), Err("not a usable")),
            (None, s(&["../x"]), Err("not a usable")),
        ];
        for (n, names, want) in cases {
            match (node_names(n, &names), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w),
                (Err(e), Err(frag)) => assert!(e.contains(frag), "{e}"),
                (got, want) => panic!("{n:?} {names:?}: {got:?}, want {want:?}"),
            }
        }
    }

    /// Generated files load as `cluster.tls`; mixing files of two CAs or a wrong key is refused
    /// naming the key at fault; the CA is not overwritten without --force.
    #[test]
    fn generated_certs_load_and_mismatches_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let names = vec!["node-1".to_string(), "node-2".to_string()];
        let ips = vec!["10.0.0.5".parse().unwrap()];
        let wa = generate(&a, &names, &ips, false).unwrap();
        let wb = generate(&b, &names, &ips, false).unwrap();
        let cfg = |c: &Path, k: &Path, ca: &Path| ClusterTlsConfig {
            cert: c.display().to_string(),
            key: k.display().to_string(),
            ca: ca.display().to_string(),
        };
        let (n1, n2) = (&wa.nodes[0], &wa.nodes[1]);
        ClusterTls::load(&cfg(&n1.1, &n1.2, &wa.ca)).unwrap();
        ClusterTls::load(&cfg(&n2.1, &n2.2, &wa.ca)).unwrap();
        // A certificate of another CA is loadable (the peers refuse it at the handshake).
        ClusterTls::load(&cfg(&wb.nodes[0].1, &wb.nodes[0].2, &wa.ca)).unwrap();
        // (config, key named, reason fragment)
        let cases = [
            (cfg(&n1.1, &n2.2, &wa.ca), "cluster.tls.key", "does not fit"),
            (
                cfg(&n1.1, &n1.1, &wa.ca),
                "cluster.tls.key",
                "no usable private key",
            ),
            (
                cfg(&n1.2, &n1.2, &wa.ca),
                "cluster.tls.cert",
                "no CERTIFICATE",
            ),
            (
                cfg(&n1.1, &n1.2, &wa.ca_key),
                "cluster.tls.ca",
                "no CERTIFICATE",
            ),
            (
                cfg(&n1.1, &n1.2, &a.join("missing.pem")),
                "cluster.tls.ca",
                "cannot read",
            ),
        ];
        for (c, key, why) in cases {
            let e = ClusterTls::load(&c).unwrap_err().to_string();
            assert!(e.starts_with(key) && e.contains(why), "{e}");
        }
        let e = generate(&a, &names, &ips, false).unwrap_err().to_string();
        assert!(e.contains("--force"), "{e}");
        generate(&a, &names, &ips, true).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&wa.ca_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the CA key is private: {mode:o}");
    }
}
