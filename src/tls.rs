//! The command line's TLS options: certificate files or a self-signed certificate for `serve`,
//! the CA to trust and an optional client certificate for `load`, turned into rustls
//! configurations (see `iomodels_core::tls`).

use anyhow::{anyhow, Context, Result};
use clap::Args;
use iomodels_core::rustls::{self, ServerConfig};
use iomodels_core::tls::{self, pki};
use iomodels_load::TlsClient;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where `serve --tls-self-signed` writes its certificate, and what `load --tls` trusts, by
/// default.
const SELF_SIGNED_DEFAULT: &str = "iomodels-self-signed.pem";

/// `serve`'s TLS options.
#[derive(Args, Debug, Clone, Default)]
pub struct ServeTlsArgs {
    /// Speak TLS (1.2 and 1.3) with this certificate chain (PEM, leaf first); needs --tls-key
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Speak TLS with a certificate made now for localhost, 127.0.0.1, ::1 (and the --listen
    /// address); prints its SHA-256 fingerprint and writes it to --tls-cert-out for clients
    /// to trust, once the port is bound (a refused start writes no file)
    #[arg(long)]
    pub tls_self_signed: bool,
    /// Where --tls-self-signed writes its certificate (PEM)
    #[arg(
        long,
        value_name = "FILE",
        default_value = SELF_SIGNED_DEFAULT,
        requires = "tls_self_signed"
    )]
    pub tls_cert_out: PathBuf,
    /// Require a client certificate that chains to a CA in FILE (PEM): mutual TLS
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
}

/// The largest certificate, key or CA file read: 4 MiB (a system's whole CA bundle is ~0.2 MiB).
/// `--tls-client-ca /dev/zero` used to grow the process to 2 GB before it listened.
const MAX_PEM_FILE: u64 = 4 << 20;

fn read(path: &Path, flag: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let cannot = || format!("{flag} {}: cannot read it", path.display());
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .with_context(cannot)?
        .take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(cannot)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        anyhow::bail!(
            "{flag} {}: larger than {} MiB, not a PEM file",
            path.display(),
            MAX_PEM_FILE >> 20
        );
    }
    Ok(bytes)
}

/// What `serve`'s TLS options ask for.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// Lines to print about it (the certificate's fingerprint, where a self-signed one goes).
    pub notes: Vec<String>,
    /// A self-signed certificate and the file it goes to (`--tls-cert-out`), written by
    /// [`ServerTls::write_cert`] once the server is bound: a start refused for any reason
    /// leaves no file behind.
    cert_out: Option<(PathBuf, String)>,
}

impl ServerTls {
    /// Writes the self-signed certificate, if there is one, to `--tls-cert-out`.
    pub fn write_cert(&self) -> Result<()> {
        let Some((path, pem)) = &self.cert_out else {
            return Ok(());
        };
        std::fs::write(path, pem).with_context(|| {
            format!(
                "--tls-cert-out {}: cannot write the certificate",
                path.display()
            )
        })
    }
}

/// The server configuration the options ask for (`None`: plain TCP).
pub fn server_config(args: &ServeTlsArgs, listen: SocketAddr) -> Result<Option<ServerTls>> {
    let client_roots = match &args.tls_client_ca {
        None => None,
        Some(path) => Some(
            tls::roots_from_pem(&read(path, "--tls-client-ca")?)
                .map_err(|e| anyhow!("--tls-client-ca {}: {e}", path.display()))?,
        ),
    };
    let mut notes = Vec::new();
    let mut cert_out = None;
    let (chain, key) = if args.tls_self_signed {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        let ip = listen.ip();
        if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
            names.push(ip.to_string());
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let issued = pki::self_signed(&names)
            .map_err(|e| anyhow!("cannot make a self-signed certificate: {e}"))?;
        cert_out = Some((args.tls_cert_out.clone(), issued.cert_pem.clone()));
        let out = args.tls_cert_out.display();
        notes.push(format!(
            "tls: self-signed certificate for {}, SHA-256 {}; written to {out} (trust it with \
             `iomodels load --tls --tls-ca {out}` or `openssl s_client -CAfile {out}`)",
            names.join(", "),
            tls::fingerprint(&issued.cert),
        ));
        (issued.chain(), issued.key())
    } else if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let chain = tls::certs_from_pem(&read(cert, "--tls-cert")?)
            .map_err(|e| anyhow!("--tls-cert {}: {e}", cert.display()))?;
        let key = tls::key_from_pem(&read(key, "--tls-key")?)
            .map_err(|e| anyhow!("--tls-key {}: {e}", key.display()))?;
        notes.push(format!(
            "tls: certificate {} ({} in the chain), SHA-256 {}",
            cert.display(),
            chain.len(),
            tls::fingerprint(&chain[0])
        ));
        (chain, key)
    } else if args.tls_client_ca.is_some() {
        return Err(crate::usage(
            "--tls-client-ca needs TLS: add --tls-cert/--tls-key or --tls-self-signed",
        ));
    } else {
        return Ok(None);
    };
    if client_roots.is_some() {
        notes.push("tls: client certificates required (mutual TLS)".to_string());
    }
    let config = tls::server_config(chain, key, client_roots).map_err(|e| {
        match (&args.tls_cert, &args.tls_key, e) {
            (
                Some(cert),
                Some(key),
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch),
            ) => anyhow!(
                "--tls-key {}: not the private key of the certificate in --tls-cert {}",
                key.display(),
                cert.display()
            ),
            (Some(cert), Some(key), e) => anyhow!(
                "--tls-cert {} with --tls-key {}: cannot be used: {e}",
                cert.display(),
                key.display()
            ),
            (_, _, e) => anyhow!("the TLS certificate and key cannot be used: {e}"),
        }
    })?;
    Ok(Some(ServerTls {
        config,
        notes,
        cert_out,
    }))
}

/// `load`'s TLS options.
#[derive(Args, Debug, Clone, Default)]
pub struct LoadTlsArgs {
    /// Speak TLS (1.2 or 1.3) on every connection, trusting --tls-ca. The handshake is part of
    /// connecting; the echoed plaintext is verified and timed as without TLS, and each
    /// connection sends close_notify before it closes
    #[arg(long)]
    pub tls: bool,
    /// Trust server certificates that chain to a certificate in FILE (PEM); for `serve
    /// --tls-self-signed`, the certificate it wrote to --tls-cert-out [default:
    /// iomodels-self-signed.pem, if it is in this directory]
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must be valid for (a DNS name or an IP address)
    /// [default: the IP address of --connect]
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Present this client certificate chain (PEM, leaf first) for mutual TLS; needs
    /// --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl LoadTlsArgs {
    /// The first TLS option given, for the error that says it needs --tls.
    fn first_given(&self) -> Option<&'static str> {
        [
            (self.tls_ca.is_some(), "--tls-ca"),
            (self.tls_server_name.is_some(), "--tls-server-name"),
            (self.tls_cert.is_some(), "--tls-cert"),
            (self.tls_key.is_some(), "--tls-key"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }
}

/// The TLS settings of `load` (`None`: plain TCP): the CA to trust, the optional client
/// certificate, and the server name, by default the IP address of `connect`, so that a
/// certificate made for 127.0.0.1 (as `serve --tls-self-signed` makes) verifies.
pub fn load_client(args: &LoadTlsArgs, connect: SocketAddr) -> Result<Option<TlsClient>> {
    if !args.tls {
        return match args.first_given() {
            Some(flag) => Err(crate::usage(format!("{flag} is a TLS option: add --tls"))),
            None => Ok(None),
        };
    }
    // Without --tls-ca, the file `serve --tls-self-signed` writes by default, if it is here:
    // the two commands work together from one directory with no flags but --tls.
    let default_ca = Path::new(SELF_SIGNED_DEFAULT);
    let ca = match &args.tls_ca {
        Some(ca) => ca.as_path(),
        None if default_ca.is_file() => default_ca,
        None => {
            return Err(crate::usage(format!(
                "--tls needs --tls-ca FILE: the CA certificate (PEM) that signed the server's \
                 (for `serve --tls-self-signed`, the file it wrote with --tls-cert-out; \
                 {SELF_SIGNED_DEFAULT} is not in this directory)"
            )))
        }
    };
    let roots = tls::roots_from_pem(&read(ca, "--tls-ca")?)
        .map_err(|e| anyhow!("--tls-ca {}: {e}", ca.display()))?;
    let identity = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((
            tls::certs_from_pem(&read(cert, "--tls-cert")?)
                .map_err(|e| anyhow!("--tls-cert {}: {e}", cert.display()))?,
            tls::key_from_pem(&read(key, "--tls-key")?)
                .map_err(|e| anyhow!("--tls-key {}: {e}", key.display()))?,
        )),
        _ => None,
    };
    let config = tls::client_config(roots, identity)
        .map_err(|e| anyhow!("the client certificate and key cannot be used: {e}"))?;
    let name = match &args.tls_server_name {
        Some(name) => name.clone(),
        None => connect.ip().to_string(),
    };
    TlsClient::new(config, &name)
        .map(Some)
        .map_err(|e| anyhow!("--tls-server-name: {e}"))
}
