//! `[server] database`, opened as this process: SQLite (`sqlite://path`, a
//! file beside the configuration; the default, for one machine) or
//! PostgreSQL (`postgres://...`, shared by any number of hosts).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rollcage_config::Config;
use rollcage_store::{HostIdentity, PostgresStore, SqliteStore, Store, mask_password};

/// Where the configuration says runs are kept.
#[derive(Debug, Clone)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    /// `[server] database` of `config`; an error names the file and the
    /// value (without a password).
    pub fn of(config: &Config) -> anyhow::Result<Location> {
        let db = &config.server.database;
        if let Some(p) = db.strip_prefix("sqlite://")
            && !p.is_empty()
        {
            return Ok(Location::Sqlite(crate::host::relative_to_config(
                config,
                Path::new(p),
            )));
        }
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            return Ok(Location::Postgres(db.clone()));
        }
        anyhow::bail!(
            "{}: [server] database = \"{}\": use `sqlite://<path>` or `postgres://user:password@host/database`",
            config.path.display(),
            mask_password(db)
        )
    }

    /// The folder local state goes in: beside an SQLite file, beside the
    /// configuration for PostgreSQL.
    pub fn folder(&self, config: &Config) -> PathBuf {
        let beside = match self {
            Location::Sqlite(path) => path.parent(),
            Location::Postgres(_) => config.path.parent(),
        };
        beside
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// An open database.
#[derive(Clone)]
pub enum Database {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Database {
    /// Open `[server] database` as `identity`.
    pub async fn open(config: &Config, identity: HostIdentity) -> anyhow::Result<Database> {
        Ok(match Location::of(config)? {
            Location::Sqlite(path) => Database::Sqlite(
                SqliteStore::open_as(&path, identity)
                    .with_context(|| format!("cannot open the database {}", path.display()))?,
            ),
            Location::Postgres(url) => {
                Database::Postgres(PostgresStore::connect(&url, identity).await.with_context(
                    || {
                        format!(
                            "cannot open the database {} ([server] database)",
                            mask_password(&url)
                        )
                    },
                )?)
            }
        })
    }

    /// A database in memory (dry runs).
    pub fn in_memory(identity: HostIdentity) -> anyhow::Result<Database> {
        Ok(Database::Sqlite(SqliteStore::in_memory_as(identity)?))
    }

    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Database::Sqlite(s) => Arc::new(s.clone()),
            Database::Postgres(p) => Arc::new(p.clone()),
        }
    }

    /// At a clean stop: an SQLite file's WAL emptied into it, so that one
    /// file is left; a failure only means the WAL stays beside it.
    pub async fn close(&self) {
        if let Database::Sqlite(s) = self
            && let Err(e) = s.checkpoint().await
        {
            tracing::debug!("database checkpoint skipped: {e}");
        }
    }
}
