//! A throwaway PostgreSQL cluster for tests, started once per test binary
//! ([`Cluster::shared`]) and given a fresh database per test
//! ([`Cluster::database`]). It listens on loopback on a free port and on a
//! socket directory of its own, trusts local connections, runs without
//! fsync, and is stopped (`pg_ctl stop -m immediate`) and removed when the
//! test binary exits.
//!
//! Without `initdb` and `pg_ctl` (`apt-get install postgresql`) the tests
//! that need it print `SKIPPED` and why, unless `CI=true`, where a missing
//! server fails them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A running cluster, stopped and removed on drop.
pub struct Cluster {
    /// Holds the data directory, the socket directory and the log.
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    port: u16,
    /// Whether the server runs as `postgres` (this process is root, which
    /// `initdb` refuses).
    as_postgres: bool,
}

static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();

impl Cluster {
    /// The cluster of this test binary, started on first use; `None`
    /// (after printing `SKIPPED: ...`) where PostgreSQL is not installed.
    /// Panics when `CI=true` and it is missing, or when it fails to start.
    pub fn shared() -> Option<&'static Cluster> {
        SHARED
            .get_or_init(|| {
                let cluster = Cluster::start()?;
                stop_shared_at_exit();
                Some(cluster)
            })
            .as_ref()
    }

    /// A new cluster of its own; `None` (after printing why) where
    /// PostgreSQL's server programs are missing and not in CI.
    pub fn start() -> Option<Cluster> {
        let Some(bin) = server_bin() else {
            let why = "PostgreSQL's initdb and pg_ctl were not found (in /usr/lib/postgresql/*/bin or on PATH): apt-get install postgresql";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{why}");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        };
        Some(Cluster::start_with(bin).unwrap_or_else(|e| panic!("test PostgreSQL cluster: {e}")))
    }

    fn start_with(bin: PathBuf) -> Result<Cluster, String> {
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("rollcage-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let cluster = Cluster {
            dir: Some(dir),
            bin,
            port: free_port()?,
            as_postgres,
        };
        cluster.prepare_dirs()?;
        cluster.initdb()?;
        cluster.pg_ctl_start()?;
        cluster.stop_when_this_process_dies();
        Ok(cluster)
    }

    /// A test binary killed outright (a timeout, SIGKILL) runs no exit
    /// handler: a detached shell stops the server and removes its files
    /// once this process is gone. Its output goes nowhere, so that nothing
    /// waiting for the test's output waits for it.
    fn stop_when_this_process_dies(&self) {
        let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
        let as_postgres = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {as_postgres}{pg_ctl} -D {data} -m immediate stop; rm -rf {dir}",
            pid = std::process::id(),
            pg_ctl = quote(&self.bin.join("pg_ctl")),
            data = quote(&self.data()),
            dir = quote(self.dir()),
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("cluster directory").path()
    }

    fn data(&self) -> PathBuf {
        self.dir().join("data")
    }

    fn sockets(&self) -> PathBuf {
        self.dir().join("sockets")
    }

    /// The socket directory, and the whole folder for `postgres` when the
    /// server runs as it.
    fn prepare_dirs(&self) -> Result<(), String> {
        std::fs::create_dir(self.sockets()).map_err(|e| e.to_string())?;
        if self.as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(self.dir()))?;
        }
        Ok(())
    }

    /// `program` of the server's, as `postgres` when this process is root.
    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn initdb(&self) -> Result<(), String> {
        run(self
            .server_command("initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
            ]))
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} \
             -c max_connections=500",
            self.port,
            self.sockets().display()
        );
        run(self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir().join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]))
        .map_err(|e| format!("{e}\n{}", self.log()))
    }

    /// The server's log, for errors.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("server.log")).unwrap_or_default()
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` as the superuser `postgres`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty database named after `prefix` (a number is added, so
    /// that every call gets its own); its URL.
    pub async fn database(&self, prefix: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!("{prefix}_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let admin = self.admin().await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url(&name)
    }

    /// A connection to the `postgres` database as its superuser, for
    /// what tests do behind the store's back.
    pub async fn admin(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connecting to the test cluster: {e}"));
        tokio::spawn(connection);
        client
    }

    /// Stop the server at once and remove its files.
    fn stop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let _ = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        drop(dir);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A static is never dropped: stop the shared cluster when the process
/// exits (the test harness returns from `main` or calls `exit`).
fn stop_shared_at_exit() {
    unsafe extern "C" {
        fn atexit(callback: extern "C" fn()) -> i32;
    }
    extern "C" fn stop_shared() {
        // `shared()` is done initialising by the time anything exits.
        if let Some(Some(cluster)) = SHARED.get() {
            let dir = cluster.dir().to_path_buf();
            let _ = cluster
                .server_command("pg_ctl")
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-m", "immediate", "stop"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    // SAFETY: `atexit` is the C library's, and `stop_shared` is a plain
    // function that only runs commands and removes files.
    unsafe {
        atexit(stop_shared);
    }
}

/// The directory holding `initdb` and `pg_ctl`: the newest of
/// `/usr/lib/postgresql/*/bin` (Debian keeps them off PATH), else PATH.
fn server_bin() -> Option<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|d| has_both(d))
}

fn is_root() -> bool {
    // The owner of this process's /proc entry is its effective user.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A port free on loopback right now.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Run `command`; its output in the error when it fails.
fn run(command: &mut Command) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
