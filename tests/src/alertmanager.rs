//! A real Alertmanager (Debian's `prometheus-alertmanager`) on loopback for
//! tests, with one webhook receiver and short group timings, killed on
//! drop. Without the binary a test says so and skips, except in CI
//! (`CI=true`), where a missing tool is a failure.

use std::process::{Child, Command, Stdio};

use crate::prometheus::free_port;

/// The binary's name in Debian's package.
pub const BIN: &str = "prometheus-alertmanager";

/// A running Alertmanager, killed on drop.
pub struct Alertmanager {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    /// Start `bin` sending every alert, grouped by `alertname` and
    /// `environment` after a second, to `url` with `Authorization: Bearer
    /// <token>`.
    pub fn start(bin: &str, url: &str, token: &str) -> Alertmanager {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                r#"route:
  receiver: rollcage
  group_by: ['alertname', 'environment']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: rollcage
    webhook_configs:
      - url: '{url}'
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: '{token}'
"#
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No cluster: nothing listens beyond the web port.
            .arg("--cluster.listen-address=")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Alertmanager {
            child,
            port,
            _dir: dir,
        }
    }
}
