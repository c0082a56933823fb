//! The etcd backend over mutual TLS, as a production cluster runs it (`--etcd-cacert`,
//! `--etcd-cert`, `--etcd-key`): a CA, a server and a client certificate made with `openssl`, an
//! etcd that requires client certificates, and the conformance suite through it. A client
//! without a certificate, or trusting another CA, is refused.

#![cfg(feature = "etcd")]

use emesh_store::etcd_server::{unique_prefix, EtcdServer, TlsFiles};
use emesh_store::{connect_etcd, EtcdOptions};
use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("running openssl");
    assert!(out.status.success(), "openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A CA named `name` and a certificate it signed for each of `leaves` (with 127.0.0.1 as an
/// address).
fn pki(dir: &Path, name: &str, leaves: &[&str]) {
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    let subj = format!("/CN={name}-ca");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &ca_key, "-out", &ca, "-days", "2", "-subj",
            &subj,
        ],
    );
    for leaf in leaves {
        let key = format!("{leaf}.key");
        let csr = format!("{leaf}.csr");
        let pem = format!("{leaf}.pem");
        openssl(
            dir,
            &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &format!("/CN={leaf}")],
        );
        let ext = format!("{leaf}.ext");
        std::fs::write(
            dir.join(&ext),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

#[tokio::test]
async fn etcd_over_mutual_tls_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki(d, "good", &["server", "client"]);
    pki(d, "other", &["stranger"]);
    let tls = TlsFiles {
        ca: d.join("good-ca.pem"),
        server_cert: d.join("server.pem"),
        server_key: d.join("server.key"),
        client_cert: d.join("client.pem"),
        client_key: d.join("client.key"),
    };
    let Some(etcd) = EtcdServer::start_tls_or_skip("etcd_over_mutual_tls_conforms", tls).await else { return };
    assert!(etcd.endpoint().starts_with("https://"));
    let prefix = unique_prefix();
    let store = etcd.store(&prefix).await.unwrap_or_else(|e| panic!("TLS connect: {e}\n{}", etcd.log()));
    emesh_store::conformance::run(&*store).await;

    // No client certificate: refused.
    let bare = EtcdOptions { cert: None, key: None, ..etcd.options(&prefix) };
    assert!(connect_etcd(&bare).await.is_err(), "a client without a certificate is refused");
    // A certificate from another CA: refused.
    let stranger =
        EtcdOptions { cert: Some(d.join("stranger.pem")), key: Some(d.join("stranger.key")), ..etcd.options(&prefix) };
    assert!(connect_etcd(&stranger).await.is_err(), "a certificate of another CA is refused");
    // A certificate without its key is a clear error, not a plain connection.
    let half = EtcdOptions { key: None, ..etcd.options(&prefix) };
    match connect_etcd(&half).await {
        Err(e) => assert!(e.to_string().contains("certificate and a key"), "{e}"),
        Ok(_) => panic!("a certificate without a key connected"),
    }
}
