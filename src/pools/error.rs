//! `DbError`: why no database work could be done, told apart by what the
//! caller can do about it (retry, refuse, look).

use deadpool_postgres::PoolError;

use crate::names::CONTROL_SCHEMA;

/// Why no database work could be done.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection within the wait deadline, or the cluster is down:
    /// the client should retry later.
    #[error("the database is busy or unavailable: {0}")]
    Unavailable(String),
    /// PostgreSQL cancelled a statement that ran past `statement_timeout`,
    /// or that waited past `lock_timeout` for a lock.
    #[error("a statement ran past its time limit")]
    StatementTimeout,
    /// The tenant's cluster is not configured on this host.
    #[error("unknown cluster `{0}`")]
    UnknownCluster(String),
    /// Admission refused the request before it waited: too many requests
    /// already wait for this cluster's connections.
    #[error("too many requests are waiting for a connection")]
    QueueFull,
    /// Admission let the request wait, and no connection came free within
    /// its deadline (`clinic.queue_timeout_ms`, or less once the queue
    /// stands).
    #[error("no connection came free within the wait deadline")]
    WaitTimeout,
    /// This tenant already has its share of connections in use.
    #[error("this clinic has too many requests in flight")]
    TenantBusy,
    /// Text PostgreSQL cannot store (a NUL character) reached a statement.
    #[error("text contains a character that cannot be stored")]
    BadText,
    /// A table or schema a statement names does not exist: a tenant's
    /// schema dropped or damaged under a running server.
    #[error("missing schema or table: {0}")]
    SchemaMissing(String),
    /// A table of the control schema does not exist: the control cluster
    /// is not the one recept migrated, or was damaged. Not a clinic's
    /// fault, and no retry mends it.
    #[error("the control schema is missing a table: {0}")]
    ControlSchemaMissing(String),
    /// The connection broke while `COMMIT` was under way and PostgreSQL
    /// could not be asked whether transaction `0` committed: the write may
    /// or may not be stored. Never to be answered with an invitation to
    /// retry.
    #[error("the outcome of transaction {0} is unknown: the connection broke during COMMIT")]
    OutcomeUnknown(String),
    /// Stored data breaks recept's own invariants (an unreadable row, a
    /// record gone inside its own transaction, an amount past its column):
    /// a permanent fault that retrying cannot mend, for an operator to
    /// look at. Never answered with an invitation to retry.
    #[error("stored data breaks an invariant: {0}")]
    Corrupt(String),
    /// A cluster's replica trails its primary by more than
    /// `admin.max_replica_lag_ms` (`lag_ms` unknown when it has replayed
    /// nothing since it started), and reports refuse rather than run on
    /// the primary.
    #[error("the replica of cluster `{cluster}` trails its primary by {} (at most {max_ms} ms allowed)", .lag_ms.map_or("an unknown time".to_string(), |l| format!("{l} ms")))]
    ReplicaBehind {
        cluster: String,
        lag_ms: Option<u64>,
        max_ms: u64,
    },
    /// A cluster's replica cannot be reached, and reports refuse rather
    /// than run on the primary.
    #[error("the replica of cluster `{cluster}` cannot be reached: {cause}")]
    ReplicaDown { cluster: String, cause: String },
    /// Any other PostgreSQL error, shown whole (severity, message,
    /// SQLSTATE, detail, hint), never as a bare "db error".
    #[error("{}", postgres_text(.0))]
    Postgres(#[source] tokio_postgres::Error),
}

/// A PostgreSQL error as an operator needs to read it: the server's own
/// message, code, detail and hint, or the client library's cause chain.
pub fn postgres_text(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        return text;
    };
    let mut text = format!(
        "{}: {} (SQLSTATE {})",
        db.severity(),
        db.message(),
        db.code().code()
    );
    if let Some(detail) = db.detail() {
        text.push_str("; detail: ");
        text.push_str(detail);
    }
    if let Some(hint) = db.hint() {
        text.push_str("; hint: ");
        text.push_str(hint);
    }
    text
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        match e.code() {
            Some(code)
                if *code == SqlState::QUERY_CANCELED || *code == SqlState::LOCK_NOT_AVAILABLE =>
            {
                DbError::StatementTimeout
            }
            Some(code)
                if *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::CRASH_SHUTDOWN
                    || *code == SqlState::CANNOT_CONNECT_NOW
                    || *code == SqlState::TOO_MANY_CONNECTIONS
                    // A hot standby cancels a query that holds back
                    // replay ("conflict with recovery"): it may run again.
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                DbError::Unavailable(postgres_text(&e))
            }
            Some(code)
                if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE
                    || *code == SqlState::UNTRANSLATABLE_CHARACTER =>
            {
                DbError::BadText
            }
            Some(code)
                if *code == SqlState::UNDEFINED_TABLE || *code == SqlState::INVALID_SCHEMA_NAME =>
            {
                let message = e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string());
                // The control schema's tables are always named with it.
                let control = format!("\"{CONTROL_SCHEMA}.");
                if message.contains(&control) {
                    DbError::ControlSchemaMissing(message)
                } else {
                    DbError::SchemaMissing(message)
                }
            }
            None if e.is_closed() || source_is_io(&e) => DbError::Unavailable(postgres_text(&e)),
            _ => DbError::Postgres(e),
        }
    }
}

fn source_is_io(e: &tokio_postgres::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => match DbError::from(e) {
                DbError::Postgres(e) => DbError::Unavailable(postgres_text(&e)),
                other => other,
            },
            other => DbError::Unavailable(other.to_string()),
        }
    }
}

impl DbError {
    /// A copy of an error shared by several waiters (the key cache hands
    /// the same `Arc` to every request that waited on one lookup): each
    /// variant is kept, except a raw PostgreSQL error, which cannot be
    /// copied and becomes `Unavailable` with its text.
    pub fn duplicate(&self) -> DbError {
        match self {
            DbError::Unavailable(s) => DbError::Unavailable(s.clone()),
            DbError::StatementTimeout => DbError::StatementTimeout,
            DbError::UnknownCluster(s) => DbError::UnknownCluster(s.clone()),
            DbError::QueueFull => DbError::QueueFull,
            DbError::WaitTimeout => DbError::WaitTimeout,
            DbError::TenantBusy => DbError::TenantBusy,
            DbError::BadText => DbError::BadText,
            DbError::SchemaMissing(s) => DbError::SchemaMissing(s.clone()),
            DbError::ControlSchemaMissing(s) => DbError::ControlSchemaMissing(s.clone()),
            DbError::OutcomeUnknown(s) => DbError::OutcomeUnknown(s.clone()),
            DbError::Corrupt(s) => DbError::Corrupt(s.clone()),
            DbError::ReplicaBehind {
                cluster,
                lag_ms,
                max_ms,
            } => DbError::ReplicaBehind {
                cluster: cluster.clone(),
                lag_ms: *lag_ms,
                max_ms: *max_ms,
            },
            DbError::ReplicaDown { cluster, cause } => DbError::ReplicaDown {
                cluster: cluster.clone(),
                cause: cause.clone(),
            },
            DbError::Postgres(e) => DbError::Unavailable(postgres_text(e)),
        }
    }

    /// Whether this is PostgreSQL's unique-violation error.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Postgres(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }
}
