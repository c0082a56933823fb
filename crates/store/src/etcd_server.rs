//! A throwaway etcd server for tests and local clusters: Debian's `etcd` binary started on free
//! loopback ports (or given addresses) with its own data folder, stopped and removed on drop.
//! [`EtcdServer::restart`] kills it and starts it again on the same ports and data, which is how
//! the failover tests take etcd away for a while.

use crate::{connect_etcd, EtcdOptions, PlacementStore, StoreError};
use emesh_common::names::ENV_REQUIRE_ETCD;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a started etcd has to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A name no other test of any process uses: pid, time, counter.
pub fn unique(what: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{what}-{}-{nanos}-{}", std::process::id(), UNIQUE.fetch_add(1, Ordering::Relaxed))
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("/emesh/{}/", unique("test"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// A running etcd; killed, and its data folder removed, on drop.
pub struct EtcdServer {
    bin: PathBuf,
    child: Option<Child>,
    dir: PathBuf,
    /// `http://host:port` the server listens on for clients (loopback first).
    listen: Vec<String>,
    peer: String,
    tls: Option<TlsFiles>,
}

/// PEM files for an etcd that serves clients over mutual TLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// What a client presents.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `etcd` binary on PATH.
pub fn find_etcd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether etcd tests must fail, not skip, without etcd (`EMESH_REQUIRE_ETCD=1`).
pub fn etcd_required() -> bool {
    std::env::var(ENV_REQUIRE_ETCD).is_ok_and(|v| v == "1")
}

impl EtcdServer {
    /// Starts etcd on loopback, or returns `None` (after saying so on stderr) when it is not
    /// installed and not required. Panics when it is required and absent, or will not start.
    pub async fn start_or_skip(test: &str) -> Option<EtcdServer> {
        Self::start_or_skip_on(test, &[]).await
    }

    /// As [`EtcdServer::start_or_skip`], also listening on each of `extra_hosts` (e.g. the host
    /// end of a veth pair), same port.
    pub async fn start_or_skip_on(test: &str, extra_hosts: &[String]) -> Option<EtcdServer> {
        Self::start_or_skip_with(test, extra_hosts, None).await
    }

    /// As [`EtcdServer::start_or_skip`], serving clients over mutual TLS with `tls`.
    pub async fn start_tls_or_skip(test: &str, tls: TlsFiles) -> Option<EtcdServer> {
        Self::start_or_skip_with(test, &[], Some(tls)).await
    }

    async fn start_or_skip_with(test: &str, extra_hosts: &[String], tls: Option<TlsFiles>) -> Option<EtcdServer> {
        let Some(bin) = find_etcd().filter(|_| crate::HAS_ETCD) else {
            assert!(
                !etcd_required(),
                "etcd not found on PATH, or emesh-store built without the `etcd` feature; install etcd-server and build with `--features emesh-cli/etcd` ({ENV_REQUIRE_ETCD}=1 is set, so this fails instead of skipping)"
            );
            // Straight to stderr: libtest captures eprintln! of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: etcd not found on PATH ({test}); install etcd-server, or set {ENV_REQUIRE_ETCD}=1 to fail instead"
            );
            return None;
        };
        // Free ports can be taken between picking and binding them: try a few times.
        let mut last = String::new();
        for _ in 0..3 {
            match Self::start(&bin, extra_hosts, tls.clone()).await {
                Ok(etcd) => return Some(etcd),
                Err(e) => last = e,
            }
        }
        panic!("could not start {}: {last}", bin.display());
    }

    async fn start(bin: &Path, extra_hosts: &[String], tls: Option<TlsFiles>) -> Result<EtcdServer, String> {
        let dir = std::env::temp_dir().join(unique("emesh-etcd"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let port = free_port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut listen = vec![format!("{scheme}://127.0.0.1:{port}")];
        listen.extend(extra_hosts.iter().map(|h| format!("{scheme}://{h}:{port}")));
        let peer = format!("http://127.0.0.1:{}", free_port());
        let mut etcd = EtcdServer { bin: bin.to_path_buf(), child: None, dir, listen, peer, tls };
        etcd.spawn().await?;
        Ok(etcd)
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .map_err(|e| format!("creating the log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("cloning the log: {e}"))?;
        let clients = self.listen.join(",");
        let mut cmd = Command::new(&self.bin);
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cert-file={}", t.server_cert.display()))
                .arg(format!("--key-file={}", t.server_key.display()))
                .arg(format!("--trusted-ca-file={}", t.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--name=emesh-test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={clients}"))
            .arg(format!("--advertise-client-urls={clients}"))
            .arg(format!("--listen-peer-urls={}", self.peer))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer))
            .arg(format!("--initial-cluster=emesh-test={}", self.peer))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawning: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("etcd exited with {status}; its log:\n{}", self.log()));
            }
            match self.store("/emesh/probe/").await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("no answer within {START_TIMEOUT:?}: {e}; its log:\n{}", self.log()))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills etcd (as `kill -9` would), waits `down`, and starts it again on the same ports and
    /// data folder.
    pub async fn restart(&mut self, down: Duration) -> Result<(), String> {
        self.kill();
        tokio::time::sleep(down).await;
        self.spawn().await
    }

    /// The loopback client endpoint.
    pub fn endpoint(&self) -> &str {
        &self.listen[0]
    }

    /// Every client endpoint (loopback first).
    pub fn endpoints(&self) -> Vec<String> {
        self.listen.clone()
    }

    /// A store on this server under `prefix`.
    pub async fn store(&self, prefix: &str) -> Result<Arc<dyn PlacementStore>, StoreError> {
        connect_etcd(&self.options(prefix)).await
    }

    /// How to reach this server (loopback) under `prefix`.
    pub fn options(&self, prefix: &str) -> EtcdOptions {
        EtcdOptions {
            endpoints: vec![self.endpoint().to_string()],
            prefix: prefix.to_string(),
            ca: self.tls.as_ref().map(|t| t.ca.clone()),
            cert: self.tls.as_ref().map(|t| t.client_cert.clone()),
            key: self.tls.as_ref().map(|t| t.client_key.clone()),
            ..Default::default()
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}
