//! [`TenantConn`]: a pooled clinic connection bound to one tenant's schema
//! for the length of one request.
//!
//! Over 600 lines: reads (in a transaction, or alone with or without the
//! check of the session), writes, the lost-COMMIT inquiry and the drop
//! guard share the one connection they protect.

use std::cell::{Cell, Ref, RefCell};
use std::pin::pin;
use std::sync::Arc;

use deadpool_postgres::{ClientWrapper, Object, Pool};
use futures::future::maybe_done;
use futures::poll;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use tracing::Instrument;

use super::DbError;

/// A client inside the tenant's transaction, as handed to
/// [`TenantConn::write`]'s closure. Its `search_path` is the tenant's schema
/// until the transaction ends. It is the connection's client (`Deref`),
/// whose `prepare_cached` gives the statement every tenant shares, and
/// [`Tx::prepare_own`] the tenant's own where it has one.
pub struct Tx<'a> {
    client: &'a Object,
    conn: &'a TenantConn,
}

impl std::ops::Deref for Tx<'_> {
    type Target = ClientWrapper;

    fn deref(&self) -> &ClientWrapper {
        self.client
    }
}

impl Tx<'_> {
    /// `sql` prepared as the tenant's own statement on one of its home
    /// connections while there is room ([`TenantConn::own_for`]), else as
    /// the statement every tenant shares. A statement shared by every
    /// tenant is analysed and planned again whenever the connection's
    /// previous transaction was another tenant's (its `search_path`
    /// changed); a tenant's own is prepared inside the tenant's
    /// transaction, under its `search_path`, and runs only there, so it
    /// keeps its plan. For the few statements of a hot write whose
    /// planning outweighs the memory its plan keeps (load/RESULTS.md, "A
    /// visit's own plans").
    pub async fn prepare_own(
        &self,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        let own = self.conn.own_for(sql);
        self.conn.statement(self.client, sql, own).await
    }
}

const BEGIN: &str = "BEGIN";
/// Selects the schema and, in the same statement, checks that the session
/// still has the settings its pool opened it with.
const SET_PATH: &str = "SELECT set_config('search_path', $1, true), \
     current_setting('statement_timeout')::interval = $2::text::interval \
     AND current_setting('application_name') = $3";
/// The same for a write, which also takes its transaction's id in that
/// flight, so that a `COMMIT` whose answer is lost can be looked up, and
/// sets how its statements are planned ([`Planning`]): `$4`, unless it is
/// null or the database has Citus, which cannot make a generic plan of a
/// statement with parameters on a distributed schema's tables ("could
/// not create distributed plan"); then the session's setting.
const SET_PATH_WRITE: &str = "SELECT set_config('search_path', $1, true), \
     current_setting('statement_timeout')::interval = $2::text::interval \
     AND current_setting('application_name') = $3, pg_current_xact_id()::text, \
     set_config('plan_cache_mode', CASE WHEN $4::text IS NULL \
       OR EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus') \
       THEN current_setting('plan_cache_mode') ELSE $4 END, true)";

/// How a write's prepared statements are planned, for its transaction
/// only (`plan_cache_mode`, which PostgreSQL forgets when it ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planning {
    /// The session's setting: PostgreSQL's default (`auto`: a statement
    /// is planned for its parameters on each of its first five uses, then
    /// kept as a generic plan if that is estimated no dearer) unless the
    /// role or database sets another. For writes whose statements search
    /// by what their parameters hold (claims generation's ranges of
    /// dates).
    Auto,
    /// Planned once for any parameters and the plan kept from the first
    /// use (`force_generic_plan`); on Citus, as [`Planning::Auto`]
    /// (`SET_PATH_WRITE`). For writes whose every statement finds
    /// rows by key, where a tenant's own statement ([`Tx::prepare_own`])
    /// then keeps its plan from its first use instead of its sixth (a
    /// statement shared by every tenant is planned again after each
    /// change of schema either way). load/RESULTS.md, "Generic plans for
    /// a visit".
    Generic,
}

impl Planning {
    /// `plan_cache_mode` for the transaction (`None`: the session's).
    fn setting(self) -> Option<&'static str> {
        match self {
            Planning::Auto => None,
            Planning::Generic => Some("force_generic_plan"),
        }
    }
}
/// How long a write whose `COMMIT` was lost keeps asking PostgreSQL what
/// became of it (the server may be restarting) before answering that the
/// outcome is unknown.
const FATE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Checks that the session still has the settings its pool opened it
/// with, on its own: the first statement of a read that needs no
/// `search_path` (`TenantConn::read`), unless the connection is known
/// unchanged since the last check.
const CHECK_SETTINGS: &str = "SELECT NULL, \
     current_setting('statement_timeout')::interval = $1::text::interval \
     AND current_setting('application_name') = $2";

/// Marks a table of the tenant's schema in a read's text:
/// `FROM "{tenant}".patients p`. On the tenant's home connections the mark
/// becomes the schema's name, so the statement needs no `search_path` and
/// runs alone (`TenantConn::read`); anywhere else it is removed and the
/// statement runs under the tenant's `search_path`, as every other does.
/// A mark left in a text PostgreSQL sees names a schema that does not
/// exist, and the statement fails.
///
/// A marked read is one `SELECT` that changes nothing of the session:
/// after one, a connection whose settings were checked needs no new check
/// (one whose text calls `set_config` is checked after all, and leaves
/// the connection unchecked; recept's schemas define no function that
/// changes a setting).
pub const TENANT: &str = "\"{tenant}\".";
/// The schema's name in [`TENANT`], which the quoted name replaces.
const MARKED_SCHEMA: &str = "\"{tenant}\"";

/// `sql` with its marks of the tenant's schema removed, for use under the
/// tenant's `search_path` (inside a write, or by a client that sets it).
pub fn unqualified(sql: &str) -> std::borrow::Cow<'_, str> {
    if sql.contains(TENANT) {
        sql.replace(TENANT, "").into()
    } else {
        sql.into()
    }
}

/// Whether `sql` calls `set_config` (in any case), which may change the
/// session: a marked read that does is checked after all
/// ([`TENANT`]).
fn calls_set_config(sql: &str) -> bool {
    const NAME: &[u8] = b"set_config";
    let bytes = sql.as_bytes();
    // Looked for at each underscore, rarer than any letter.
    bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'_')
        .any(|(i, _)| {
            i >= 3
                && bytes
                    .get(i - 3..i - 3 + NAME.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(NAME))
        })
}

const XACT_STATUS: &str = "SELECT pg_xact_status($1::text::xid8)";
const COMMIT: &str = "COMMIT";
const ROLLBACK: &str = "ROLLBACK";

/// A clinic connection bound to one tenant for one request.
///
/// Every statement runs inside a transaction whose first act is
/// `set_config('search_path', schema, true)`, which PostgreSQL forgets when
/// the transaction ends. `BEGIN` and `set_config` travel in the same flight
/// as the first statement, so selecting the tenant costs no round trip.
/// The one exception needs no `search_path`: a read whose text names the
/// tenant's schema itself, where it has statements of its own (`read`).
///
/// If the value is dropped while a transaction is open or a statement in
/// flight (the client went away mid-request), the connection is cancelled
/// and closed, never handed back to the pool: no open transaction can
/// reach another request.
pub struct TenantConn {
    /// `None` only after the connection was discarded (in `drop`, or after
    /// it broke during a `COMMIT`). A `RefCell` so that a broken connection
    /// can be given back before another is asked for.
    client: RefCell<Option<Object>>,
    /// The pool it came from: after a lost `COMMIT`, the transaction's fate
    /// is asked on another of its connections.
    pool: Pool,
    /// The tenant's schema, quoted for `search_path`.
    search_path: Arc<str>,
    /// Whether a transaction may be open on `client`, or a statement in
    /// flight.
    open: Cell<bool>,
    /// The session settings the pool opens connections with.
    expected: Arc<ExpectedSettings>,
    /// Set when the session's settings were found changed: the connection
    /// is discarded instead of returning to the pool.
    tainted: Cell<bool>,
    /// Its pool's counts, told when the connection is discarded.
    counts: Arc<super::ConnectionCounts>,
    /// The request's place in its tenant's share (clinic requests only);
    /// released when the connection is.
    _share: Option<super::TenantShare>,
    /// Whether its reads use statements of the tenant's own here
    /// (`statement`): on one of the tenant's home connections, or one that has
    /// served few schemas.
    own_statements: bool,
    /// What its slot knows of the connection: whether its settings are
    /// known unchanged since their last check (`None`: not a shard's
    /// connection, checked on every use).
    slot: Option<Arc<super::slots::SlotState>>,
    /// Its place among the shard's connections (tenant-affine routing),
    /// given up after `client` has gone back: a field dropped after it.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// What a pool's connections must show, checked on every use, and how
/// many prepared statements each keeps.
#[derive(Debug)]
pub struct ExpectedSettings {
    /// `statement_timeout` as PostgreSQL reads an interval, e.g. `5000ms`.
    pub statement_timeout: String,
    pub application_name: &'static str,
    /// `clinic.connection_max_statements`.
    pub max_statements: usize,
}

/// How a write's transaction ended, as far as this connection knows.
enum Ending<T, E> {
    /// Committed, rolled back, or failed before `COMMIT` was sent.
    Known(Result<T, E>),
    /// `COMMIT` was sent and its answer lost with the connection: the
    /// transaction `xact` may or may not have committed.
    CommitLost {
        xact: String,
        value: T,
        error: tokio_postgres::Error,
    },
}

/// What PostgreSQL says of a transaction after its `COMMIT` was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Committed,
    Aborted,
    Unknown,
}

/// Whether a failed `COMMIT` leaves its outcome in doubt: the connection
/// broke (no answer, or a FATAL from a backend being terminated, which may
/// come after the commit was made durable). An ordinary error (a deferred
/// constraint, a serialization failure) means it rolled back.
fn commit_in_doubt(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::Severity;
    match e.as_db_error() {
        None => true,
        Some(db) => {
            matches!(
                db.parsed_severity(),
                Some(Severity::Fatal | Severity::Panic)
            ) || db.code().code().starts_with("57")
                || db.code().code().starts_with("08")
        }
    }
}

// A `TenantConn` belongs to one request on one thread, and its client is
// borrowed mutably only in `discard`, which runs when no statement is under
// way (after `transact` returned), and in `drop`: a shared borrow held
// across an await can never meet a mutable one.
#[allow(clippy::await_holding_refcell_ref)]
impl TenantConn {
    pub(super) fn new(
        taken: super::slots::Taken,
        schema: &str,
        expected: Arc<ExpectedSettings>,
        counts: Arc<super::ConnectionCounts>,
        share: Option<super::TenantShare>,
    ) -> TenantConn {
        TenantConn {
            client: RefCell::new(Some(taken.object)),
            pool: taken.pool,
            search_path: crate::names::quote_ident(schema).into(),
            open: Cell::new(false),
            expected,
            tainted: Cell::new(false),
            counts,
            _share: share,
            own_statements: taken.own_statements,
            slot: taken.state,
            _permit: taken.permit,
        }
    }

    /// `sql` prepared on this connection, as the tenant's `own` statement
    /// or as the one every tenant shares. A tenant's own statement names
    /// the schema in its text, in place of the marks of [`TENANT`] or else
    /// in a comment. PostgreSQL analyses and plans a prepared statement
    /// again whenever it runs under another `search_path` than last time,
    /// so a statement shared by every tenant is planned anew on almost
    /// every use, while a tenant's own keeps its plan (load/RESULTS.md,
    /// "Tenant-affine connections"). A connection holding more than
    /// `clinic.connection_max_statements` (own statements take at most
    /// half, [`TenantConn::own_for`]) forgets them all (each is closed on
    /// the server as its last handle goes) and prepares again.
    async fn statement(
        &self,
        client: &Object,
        sql: &str,
        own: bool,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        let statement = if own && sql.contains(TENANT) {
            client
                .prepare_cached(&sql.replace(MARKED_SCHEMA, &self.search_path))
                .await?
        } else if own {
            client
                .prepare_cached(&format!("/* {} */ {sql}", self.search_path))
                .await?
        } else {
            client.prepare_cached(&unqualified(sql)).await?
        };
        if client.statement_cache.size() > self.expected.max_statements {
            client.statement_cache.clear();
            if let Some(slot) = &self.slot {
                slot.forget_own();
            }
        }
        Ok(statement)
    }

    /// Whether `sql` runs here as the tenant's own statement: on one of
    /// its home connections (or one that has served few schemas), while
    /// the connection's own statements number less than half of
    /// `clinic.connection_max_statements` or this one is among them
    /// ([`super::slots::SlotState::admit_own`]); the other half is for the
    /// statements every tenant shares.
    fn own_for(&self, sql: &str) -> bool {
        // (A schema name that could end the comment never gets one; recept's
        // schema names cannot, being `t_` and a slug.)
        if !self.own_statements || self.search_path.contains("*/") {
            return false;
        }
        // Only a shard's connections have own statements, and a slot.
        self.slot.as_ref().is_some_and(|slot| {
            slot.admit_own(
                super::slots::key_of((&*self.search_path, sql)),
                self.expected.max_statements / 2,
            )
        })
    }

    /// Whether the connection's session settings were found changed (it
    /// will be discarded).
    pub fn tainted(&self) -> bool {
        self.tainted.get()
    }

    /// `row`'s second column: whether the session's settings are those of
    /// its pool (`SET_PATH`, `SET_PATH_WRITE`, `CHECK_SETTINGS`).
    fn check_settings(&self, row: &Row) -> Result<(), DbError> {
        if row.get::<_, Option<bool>>(1) == Some(true) {
            return Ok(());
        }
        self.tainted.set(true);
        tracing::error!("a pooled connection's session settings changed; it is discarded");
        Err(DbError::Unavailable(
            "a connection's session settings had changed; it was discarded".into(),
        ))
    }

    fn client(&self) -> Ref<'_, Object> {
        Ref::map(self.client.borrow(), |c| {
            c.as_ref().expect("client is present until drop")
        })
    }

    /// Runs one read statement. On one of the tenant's home connections, a
    /// statement whose tables carry the marks of [`TENANT`] names the
    /// schema itself: it goes out alone, with no transaction, after the
    /// check of the session's settings in the same flight (two answers;
    /// one statement that did both was no faster and its plan took more
    /// memory: load/RESULTS.md), or without the check while the connection
    /// is known unchanged since the last one (one answer). Any other runs
    /// in its own transaction: `BEGIN`, `set_config`, the statement and
    /// `COMMIT` go out as one flight once the statement is prepared on
    /// this connection (the first use on a connection prepares it inside
    /// the transaction first), and PostgreSQL answers each apart.
    pub async fn read(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let span = tracing::debug_span!(
            "db.read",
            db.system = "postgresql",
            db.statement = sql,
            db.schema = &*self.search_path,
        );
        let own = self.own_for(sql);
        if own && sql.contains(TENANT) {
            self.read_alone(sql, params).instrument(span).await
        } else {
            self.unchecked();
            self.read_inner(sql, params, own).instrument(span).await
        }
    }

    /// Whether the next read that runs alone checks the session's settings
    /// first: unless they were checked and since then only marked reads
    /// ran on this connection.
    pub fn checks_settings_next(&self) -> bool {
        !self.slot.as_ref().is_some_and(|s| s.settings_checked())
    }

    /// Records that what runs next may change the session: the next read
    /// that runs alone checks it first.
    fn unchecked(&self) {
        if let Some(slot) = &self.slot {
            slot.set_settings_checked(false);
        }
    }

    /// A read whose text names the tenant's schema, on one of its home
    /// connections: no transaction, no `search_path`; the check of the
    /// session's settings goes first in the same flight, unless the
    /// connection is known unchanged since the last one (on a connection
    /// serving its tenants' reads, most of them: one statement and one
    /// answer instead of two, load/RESULTS.md, "Two homes").
    async fn read_alone(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let changes_session = calls_set_config(sql);
        if changes_session || self.checks_settings_next() {
            self.read_alone_checked(sql, params, changes_session).await
        } else {
            let client = self.client();
            let statement = self.statement(&client, sql, true).await?;
            // A statement in flight: dropped now, the connection is discarded.
            self.open.set(true);
            let rows = client.query(&statement, params).await;
            self.open.set(false);
            Ok(rows?)
        }
    }

    /// [`TenantConn::read_alone`] with the check of the settings first;
    /// the connection is known checked after it unless the read itself
    /// `changes_session`.
    async fn read_alone_checked(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        changes_session: bool,
    ) -> Result<Vec<Row>, DbError> {
        self.unchecked();
        let client = self.client();
        let check = client.prepare_cached(CHECK_SETTINGS).await?;
        let statement = self.statement(&client, sql, true).await?;
        let timeout: &str = &self.expected.statement_timeout;
        let application: &str = self.expected.application_name;
        let check_params: [&(dyn ToSql + Sync); 2] = [&timeout, &application];
        // A statement in flight: dropped now, the connection is discarded.
        self.open.set(true);
        let mut check_f = pin!(maybe_done(client.query_one(&check, &check_params)));
        let mut query_f = pin!(maybe_done(client.query(&statement, params)));
        let _ = poll!(check_f.as_mut());
        let _ = poll!(query_f.as_mut());
        check_f.as_mut().await;
        query_f.as_mut().await;
        self.open.set(false);
        self.check_settings(&check_f.take_output().expect("awaited")?)?;
        if let (Some(slot), false) = (&self.slot, changes_session) {
            slot.set_settings_checked(true);
        }
        Ok(query_f.take_output().expect("awaited")?)
    }

    async fn read_inner(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        own: bool,
    ) -> Result<Vec<Row>, DbError> {
        let client = self.client();
        let (begin, set_path, commit) = self.transaction_statements(SET_PATH).await?;
        let search_path: &str = &self.search_path;
        let timeout: &str = &self.expected.statement_timeout;
        let application: &str = self.expected.application_name;
        let path_params: [&(dyn ToSql + Sync); 3] = [&search_path, &timeout, &application];
        self.open.set(true);

        // Polling each future once sends its messages, in this order.
        let query_sent = Cell::new(false);
        let mut begin_f = pin!(maybe_done(client.execute(&begin, &[])));
        let mut path_f = pin!(maybe_done(client.query_one(&set_path, &path_params)));
        let mut query_f = pin!(maybe_done(async {
            let statement = self.statement(&client, sql, own).await?;
            query_sent.set(true);
            client.query(&statement, params).await
        }));
        let mut commit_f = pin!(maybe_done(client.execute(&commit, &[])));
        let _ = poll!(begin_f.as_mut());
        let _ = poll!(path_f.as_mut());
        let _ = poll!(query_f.as_mut());
        if query_sent.get() {
            // The statement was cached and is on its way: COMMIT can follow it.
            let _ = poll!(commit_f.as_mut());
        }
        begin_f.as_mut().await;
        path_f.as_mut().await;
        query_f.as_mut().await;
        commit_f.as_mut().await;

        let committed = commit_f.take_output().expect("awaited");
        if committed.is_ok() {
            self.open.set(false);
        }
        begin_f.take_output().expect("awaited")?;
        self.check_settings(&path_f.take_output().expect("awaited")?)?;
        let rows = query_f.take_output().expect("awaited")?;
        committed?;
        Ok(rows)
    }

    /// Runs `work` in one transaction in the tenant's schema and commits if
    /// it returns `Ok`, rolls back otherwise. `BEGIN` and `set_config` are
    /// pipelined with `work`'s first statement. Its statements are planned
    /// as PostgreSQL chooses ([`Planning::Auto`]).
    pub async fn write<T, E>(&self, work: impl AsyncFnOnce(&Tx<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DbError>,
    {
        self.write_planned(Planning::Auto, work).await
    }

    /// [`TenantConn::write`] with its statements planned as `planning`
    /// says.
    pub async fn write_planned<T, E>(
        &self,
        planning: Planning,
        work: impl AsyncFnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError>,
    {
        let span = tracing::debug_span!(
            "db.transaction",
            db.system = "postgresql",
            db.schema = &*self.search_path,
        );
        self.unchecked();
        self.write_inner(planning, work).instrument(span).await
    }

    async fn write_inner<T, E>(
        &self,
        planning: Planning,
        work: impl AsyncFnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError>,
    {
        match self.transact(planning, work).await {
            Ending::Known(result) => result,
            Ending::CommitLost { xact, value, error } => {
                // The broken connection goes first, so that a pool of one
                // can hand out another.
                self.discard();
                match self.fate(&xact).await {
                    Fate::Committed => {
                        tracing::warn!(%xact, %error, "the connection broke during COMMIT; the transaction had committed");
                        Ok(value)
                    }
                    Fate::Aborted => {
                        tracing::warn!(%xact, %error, "the connection broke during COMMIT; the transaction was rolled back");
                        Err(DbError::from(error).into())
                    }
                    Fate::Unknown => {
                        tracing::error!(%xact, %error, "the connection broke during COMMIT and the outcome could not be learned");
                        Err(DbError::OutcomeUnknown(xact).into())
                    }
                }
            }
        }
    }

    /// The write's transaction, up to and including `COMMIT`.
    async fn transact<T, E>(
        &self,
        planning: Planning,
        work: impl AsyncFnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Ending<T, E>
    where
        E: From<DbError>,
    {
        let client = self.client();
        let (begin, set_path, commit) = match self.transaction_statements(SET_PATH_WRITE).await {
            Ok(statements) => statements,
            Err(e) => return Ending::Known(Err(e.into())),
        };
        let search_path: &str = &self.search_path;
        let timeout: &str = &self.expected.statement_timeout;
        let application: &str = self.expected.application_name;
        let plan_cache_mode = planning.setting();
        let path_params: [&(dyn ToSql + Sync); 4] =
            [&search_path, &timeout, &application, &plan_cache_mode];
        self.open.set(true);

        let mut begin_f = pin!(maybe_done(client.execute(&begin, &[])));
        let mut path_f = pin!(maybe_done(client.query_one(&set_path, &path_params)));
        let _ = poll!(begin_f.as_mut());
        let _ = poll!(path_f.as_mut());
        let tx = Tx {
            client: &client,
            conn: self,
        };
        let mut work_f = pin!(maybe_done(work(&tx)));
        let _ = poll!(work_f.as_mut());
        begin_f.as_mut().await;
        path_f.as_mut().await;
        work_f.as_mut().await;

        let started = begin_f
            .take_output()
            .expect("awaited")
            .and(path_f.take_output().expect("awaited"));
        let outcome = work_f.take_output().expect("awaited");
        if let Ok(row) = &started {
            if let Err(e) = self.check_settings(row) {
                self.rollback().await;
                return Ending::Known(Err(e.into()));
            }
        }
        Ending::Known(match (started, outcome) {
            (Ok(row), Ok(value)) => match client.execute(&commit, &[]).await {
                Ok(_) => {
                    self.open.set(false);
                    Ok(value)
                }
                Err(error) if commit_in_doubt(&error) => {
                    return Ending::CommitLost {
                        xact: row.get(2),
                        value,
                        error,
                    }
                }
                Err(error) => Err(DbError::from(error).into()),
            },
            (Err(e), _) => {
                self.rollback().await;
                Err(DbError::from(e).into())
            }
            (Ok(_), Err(e)) => {
                self.rollback().await;
                Err(e)
            }
        })
    }

    /// Takes the connection out of the pool for good (it broke).
    fn discard(&self) {
        if let Some(client) = self.client.borrow_mut().take() {
            self.counts.discarded();
            drop(Object::take(client));
        }
    }

    /// Asks another connection of the same pool what became of `xact`:
    /// a terminated backend's transaction is settled within moments, so
    /// "in progress" is asked again a few times.
    async fn fate(&self, xact: &str) -> Fate {
        // The break is often the server going away (a restart, a
        // failover): keep asking for a while before calling it unknowable.
        let deadline = tokio::time::Instant::now() + FATE_PATIENCE;
        loop {
            if let Ok(client) = self.pool.get().await {
                match client.query_one(XACT_STATUS, &[&xact]).await {
                    Ok(row) => match row.get::<_, Option<String>>(0).as_deref() {
                        Some("committed") => return Fate::Committed,
                        Some("aborted") => return Fate::Aborted,
                        Some("in progress") => {}
                        _ => return Fate::Unknown,
                    },
                    Err(_) => drop(Object::take(client)),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Fate::Unknown;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn rollback(&self) {
        if self.client().batch_execute(ROLLBACK).await.is_ok() {
            self.open.set(false);
        }
    }

    /// `BEGIN`, `set_path` (`SET_PATH` for reads, `SET_PATH_WRITE` for
    /// writes) and `COMMIT`, prepared once per connection (they do not
    /// depend on the schema).
    async fn transaction_statements(
        &self,
        set_path: &str,
    ) -> Result<
        (
            tokio_postgres::Statement,
            tokio_postgres::Statement,
            tokio_postgres::Statement,
        ),
        DbError,
    > {
        let client = self.client();
        Ok((
            client.prepare_cached(BEGIN).await?,
            client.prepare_cached(set_path).await?,
            client.prepare_cached(COMMIT).await?,
        ))
    }
}

impl Drop for TenantConn {
    fn drop(&mut self) {
        if self.tainted.get() {
            if let Some(client) = self.client.get_mut().take() {
                self.counts.discarded();
                drop(Object::take(client));
            }
            return;
        }
        if !self.open.get() {
            return;
        }
        if let Some(client) = self.client.get_mut().take() {
            // Take the connection out of the pool so no other request can
            // receive it mid-transaction; cancel whatever it runs, then close.
            self.counts.discarded();
            let wrapper = Object::take(client);
            let cancel = wrapper.cancel_token();
            tracing::warn!(
                "request ended inside a transaction or a statement; connection discarded"
            );
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = cancel.cancel_query(NoTls).await;
                    drop(wrapper);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::calls_set_config;

    #[test]
    fn a_read_calling_set_config_is_told_apart_in_any_case() {
        assert!(calls_set_config("SELECT set_config('a', 'b', false)"));
        assert!(calls_set_config("SELECT 1, SET_Config('a', 'b', false)"));
        assert!(!calls_set_config(
            "SELECT p.name_kana, p.birth_date FROM \"{tenant}\".patients p WHERE p.id = $1"
        ));
        assert!(!calls_set_config(
            "SELECT birth_date, name_kana, _x, config FROM t"
        ));
        assert!(!calls_set_config("SELECT set_confi"));
    }
}
