//! Runs the real `openclaw-csi-provider sync` binary against the fake API server: a temporary directory
//! (its log, a shared HMAC key file), a health port, short leader-election and rollout timings, and
//! `kill -9` for failover tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{BINARY, free_port, http_get, signal, wait_bounded};

/// A running sync controller.
pub struct SyncProcess {
    child: Option<Child>,
    pub health: String,
    pub log: PathBuf,
}

/// Flags every test controller gets: the fake's kubeconfig, the Lease namespace, fast timings.
pub fn base_flags(kubeconfig: &Path, key_file: &Path) -> Vec<String> {
    [
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--leader-election-namespace",
        "openclaw-system",
        "--leader-election-lease-duration",
        "3",
        "--min-refresh-interval",
        "1",
        "--rollout-debounce",
        "1",
        "--hmac-key-file",
        &key_file.display().to_string(),
        "--kube-api-qps",
        "1000",
        "--kube-api-burst",
        "1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl SyncProcess {
    /// Starts `sync` with `flags`, logging to `dir/<name>.log`, as pod `name`; waits for its health port.
    pub fn start(dir: &Path, name: &str, flags: &[String]) -> Self {
        Self::start_with_env(dir, name, flags, &[])
    }

    /// [`SyncProcess::start`] with extra environment variables.
    pub fn start_with_env(dir: &Path, name: &str, flags: &[String], env: &[(&str, &str)]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let health = format!("127.0.0.1:{}", free_port());
        let log_file = fs::File::create(&log).expect("log file");
        // Debug logs unless the caller chose a level (a flag may be given once).
        let level: &[&str] = if flags.iter().any(|f| f == "--log-level") {
            &[]
        } else {
            &["--log-level", "debug"]
        };
        // OPENCLAW_SYNC_WRAPPER (e.g. `valgrind --tool=massif`) runs the controller under a profiler.
        let wrapper = std::env::var("OPENCLAW_SYNC_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(BINARY);
                command
            }
            None => Command::new(BINARY),
        };
        let child = command
            .env("POD_NAME", name)
            .envs(env.iter().copied())
            .args(["sync", "--health-addr", &health, "--log-format", "json"])
            .args(level)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn sync");
        let mut process = Self {
            child: Some(child),
            health,
            log,
        };
        let wait = if wrapper.is_empty() { 10 } else { 120 };
        let deadline = Instant::now() + Duration::from_secs(wait);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&process.health).is_ok() {
                return process;
            }
            assert!(process.running(), "sync exited:\n{}", process.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sync did not listen within {wait} s:\n{}", process.logs());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Whether this replica says it leads (its log).
    pub fn leads(&self) -> bool {
        self.logs().contains("\"leading\"")
    }

    /// `kill -9`: no shutdown, no Lease release.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, bounded.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        wait_bounded(&mut child, Duration::from_secs(20))
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(&self.health, path)
    }

    /// The value of a metric line starting with `prefix` (0 when absent).
    pub fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for SyncProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
