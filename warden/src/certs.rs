//! `warden certs-dev`: a development CA, a server certificate for localhost, a client
//! certificate, and a JWT signing key pair. DEVELOPMENT ONLY: every subject says so,
//! and nothing here is suitable for production.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Validity of development certificates.
const DEV_VALIDITY_DAYS: i64 = 30;
/// The client certificate's SPIFFE-style identity.
pub const DEV_CLIENT_URI: &str = "spiffe://warden.dev/client/dev";

fn write(dir: &Path, name: &str, contents: &str, mode: u32) -> anyhow::Result<()> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "Warden DEVELOPMENT ONLY");
    d.push(DnType::CommonName, cn);
    d
}

fn validity(p: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(DEV_VALIDITY_DAYS);
}

/// Writes ca.pem, server.pem, server.key, client.pem, client.key, jwt.key, jwt.pub.pem.
pub fn run(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = dn("Warden development CA - NOT FOR PRODUCTION");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".into(),
        "::1".into(),
    ])?;
    server.distinguished_name = dn("localhost (Warden development server)");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut server);
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let client_key = KeyPair::generate()?;
    let mut client = CertificateParams::default();
    client.distinguished_name = dn("warden-dev-client");
    client.subject_alt_names = vec![SanType::URI(DEV_CLIENT_URI.try_into()?)];
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut client);
    let client_cert = client.signed_by(&client_key, &issuer)?;

    // ES256 key for `warden token`.
    let jwt_key = KeyPair::generate()?;

    write(out, "ca.pem", &ca_cert.pem(), 0o644)?;
    write(
        out,
        "server.pem",
        &format!("{}{}", server_cert.pem(), ca_cert.pem()),
        0o644,
    )?;
    write(out, "server.key", &server_key.serialize_pem(), 0o640)?;
    // The gateway re-reads its key on rotation after dropping to its uid, and refuses
    // to start with a key it could not re-read: when made as root, the key's group is
    // the gateway's.
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(
            out.join("server.key"),
            None,
            Some(warden_shared::config::DEFAULT_GATEWAY_UID),
        )?;
    }
    write(out, "client.pem", &client_cert.pem(), 0o644)?;
    write(out, "client.key", &client_key.serialize_pem(), 0o600)?;
    write(out, "jwt.key", &jwt_key.serialize_pem(), 0o600)?;
    write(out, "jwt.pub.pem", &jwt_key.public_key_pem(), 0o644)?;
    write(
        out,
        "README.txt",
        "DEVELOPMENT ONLY. Made by `warden certs-dev`. Anyone with these files can\n\
         impersonate the server and mint tokens. Never use them in production.\n",
        0o644,
    )?;
    println!(
        "development certificates written to {} (NOT FOR PRODUCTION)",
        out.display()
    );
    Ok(())
}
