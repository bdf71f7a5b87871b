//! The database endpoints of the management API: `POST /v1/tenants/{t}/db/{db}/query` with a
//! JSON body `{"sql": "…", "params": [...]}`, invoked with `/db/query` (args `tenant`, `db`,
//! `sql`), and `GET /v1/tenants/{t}/db`, the tenant's database names, invoked with `/db/list`
//! (args `tenant`; a chain scoped to some databases, with a `.db` policy, cannot list them all).
//!
//! The invocation is checked like any other (signatures, time, revocation, replay, every link
//! covering `/db/query` or a table command), except that its policies are not evaluated on the
//! invocation's own arguments, which name no table: instead the chain must be able to allow
//! some `/db` action on some table of that database
//! ([`zerodb::check_database`]), and then every table
//! the statement touches is checked against the chain with `/db/read`, `/db/write`,
//! `/db/create` or `/db/delete` and the invocation's arguments plus `.table`, by the same
//! [`zero_auth::ScopedChain`] rule that checks components. So a delegation scoped with
//! `[["==", ".db", "app"], ["==", ".table", "todos"]]` works here exactly as for a component.

use std::sync::Arc;

use axum::extract::State;
use zero_auth::{Capability, Command, Ipld, ScopedChain};

use crate::api::{Api, Resp, Upload, arg_str, expect_arg};
use crate::apps::Refusal;
use crate::ucan::{Endpoint, Ucan};

/// Largest body of a database query request.
const MAX_QUERY_BODY: usize = 4 << 20;

/// The invocation-level check of `/db/query`: every link covers the command or one of the
/// table commands (so a `/db/read` delegation can be used to read), and the chain can reach the
/// invoked database for some table. Each table is then checked with its own command.
fn scope(caps: &[Capability], cmd: &Command, args: &Ipld) -> Result<(), zero_auth::Error> {
    let table_commands: Vec<Command> = zerodb::Action::ALL
        .iter()
        .filter_map(|a| zerodb::table_command(*a).ok())
        .collect();
    if let Some(cap) = caps
        .iter()
        .find(|c| !c.command.covers(cmd) && !table_commands.iter().any(|t| c.command.covers(t)))
    {
        return Err(zero_auth::Error::InvalidClaim {
            token: Box::new(cap.delegation),
            reason: format!(
                "command `{cmd}` is not covered by the delegated command `{}`; ask for a \
                 delegation of `/db` (or of `/db/read`, `/db/write`, `/db/create` or \
                 `/db/delete`, scoped with .db and .table)",
                cap.command
            ),
        });
    }
    let Ipld::Map(map) = args else {
        return zero_auth::authorize(caps, cmd, args);
    };
    let Some(Ipld::String(db)) = map.get("db") else {
        // Reported by the argument checks of the endpoint.
        return Ok(());
    };
    zerodb::check_database(
        &ScopedChain::new(Some(caps.to_vec()), map.clone(), None),
        db,
    )
}

fn json_to_value(v: &serde_json::Value, i: usize) -> Result<zerodb::Value, Refusal> {
    let bad = || {
        Refusal::new(
            400,
            "InvalidArgs",
            format!(
                "params[{i}] must be null, a number, a string, a boolean or {{\"hex\": \"…\"}} for a blob"
            ),
        )
    };
    Ok(match v {
        serde_json::Value::Null => zerodb::Value::Null,
        serde_json::Value::Bool(b) => zerodb::Value::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(x) => zerodb::Value::Integer(x),
            None => zerodb::Value::Real(n.as_f64().ok_or_else(bad)?),
        },
        serde_json::Value::String(s) => zerodb::Value::Text(s.clone()),
        serde_json::Value::Object(o) if o.len() == 1 => {
            let h = o.get("hex").and_then(|h| h.as_str()).ok_or_else(bad)?;
            zerodb::Value::Blob(hex::decode(h).map_err(|_| bad())?)
        }
        _ => return Err(bad()),
    })
}

/// The answer, serialized straight from the rows (no intermediate JSON tree, whose per-value
/// overhead would multiply the result's size).
#[derive(serde::Serialize)]
struct Answer<'a> {
    columns: &'a [String],
    rows: Rows<'a>,
    rows_affected: u64,
    last_insert_id: i64,
}

struct Rows<'a>(&'a [Vec<zerodb::Value>]);
struct Row<'a>(&'a [zerodb::Value]);
struct Cell<'a>(&'a zerodb::Value);

impl serde::Serialize for Rows<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|r| Row(r)))
    }
}

impl serde::Serialize for Row<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(Cell))
    }
}

impl serde::Serialize for Cell<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self.0 {
            zerodb::Value::Null => s.serialize_unit(),
            zerodb::Value::Integer(i) => s.serialize_i64(*i),
            zerodb::Value::Real(f) => s.serialize_f64(*f),
            zerodb::Value::Text(t) => s.serialize_str(t),
            zerodb::Value::Blob(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("hex", &hex::encode(b))?;
                m.end()
            }
        }
    }
}

fn db_refusal(e: zerodb::Error) -> Refusal {
    let (status, name) = match &e {
        zerodb::Error::PermissionDenied { .. } => (403, "PermissionDenied"),
        zerodb::Error::Syntax { .. } => (400, "Syntax"),
        zerodb::Error::Constraint { .. } => (409, "Constraint"),
        zerodb::Error::LimitExceeded { kind, .. } if *kind == "open_databases" => {
            (503, "LimitExceeded")
        }
        zerodb::Error::LimitExceeded { .. } => (413, "LimitExceeded"),
        zerodb::Error::Refused { .. } => (400, "Refused"),
        zerodb::Error::InvalidName(_) => (400, "InvalidArgs"),
        _ => (500, "Database"),
    };
    Refusal::new(status, name, e.to_string())
}

/// `POST /v1/tenants/{tenant}/db/{db}/query`.
pub(crate) struct DbQuery;

impl Endpoint for DbQuery {
    const COMMAND: &'static str = "/db/query";
    const URL_ARGS: &'static [&'static str] = &["tenant", "db"];

    fn scope(caps: &[Capability], cmd: &Command, args: &Ipld) -> Result<(), zero_auth::Error> {
        scope(caps, cmd, args)
    }
}

/// `POST /v1/tenants/{tenant}/db/{db}/query`: authorized from the headers (the statement is
/// in the invocation's args) before the body is read.
pub(crate) async fn query(
    State(api): State<Arc<Api>>,
    ucan: Ucan<DbQuery>,
    upload: Upload,
) -> Result<Resp, Refusal> {
    api.db_query(ucan, upload).await
}

/// `GET /v1/tenants/{tenant}/db`.
pub(crate) struct DbList;

impl Endpoint for DbList {
    const COMMAND: &'static str = "/db/list";
    const URL_ARGS: &'static [&'static str] = &["tenant"];
}

/// `GET /v1/tenants/{tenant}/db`: `{"tenant": …, "databases": [names]}`; opens nothing.
pub(crate) async fn list(State(api): State<Arc<Api>>, ucan: Ucan<DbList>) -> Result<Resp, Refusal> {
    let tenant = arg_str(&ucan.inv.args, "tenant")?.to_string();
    api.require_tenant(&tenant)?;
    let (databases, t) = (api.databases.clone(), tenant.clone());
    let names = tokio::task::spawn_blocking(move || databases.list(&t))
        .await
        .map_err(|e| Refusal::new(500, "Database", format!("the database task failed: {e}")))?
        .map_err(db_refusal)?;
    Ok(crate::api::json_response(
        200,
        serde_json::json!({"tenant": tenant, "databases": names}),
    ))
}

impl Api {
    async fn db_query(&self, ucan: Ucan<DbQuery>, upload: Upload) -> Result<Resp, Refusal> {
        let grants = ucan.checker();
        let inv = ucan.inv;
        let tenant = arg_str(&inv.args, "tenant")?;
        let db = arg_str(&inv.args, "db")?;
        let bytes = upload.read(MAX_QUERY_BODY, "the query request").await?;
        let request: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            Refusal::new(
                400,
                "InvalidArgs",
                format!("the body must be JSON {{\"sql\": \"…\", \"params\": […]}}: {e}"),
            )
        })?;
        let sql = request["sql"].as_str().ok_or_else(|| {
            Refusal::new(400, "InvalidArgs", "the body must have `sql` as a string")
        })?;
        expect_arg(&inv.args, "sql", sql)?;
        let params = match &request["params"] {
            serde_json::Value::Null => vec![],
            serde_json::Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| json_to_value(v, i))
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(Refusal::new(
                    400,
                    "InvalidArgs",
                    "`params` must be a list of values",
                ));
            }
        };
        self.require_tenant(tenant)?;
        let (databases, tenant_s, db_s, sql_s) = (
            self.databases.clone(),
            tenant.to_string(),
            db.to_string(),
            sql.to_string(),
        );
        // Cancelled when this future is dropped (the client went away).
        let ctl = zerodb::Control::new();
        let _cancel = ctl.cancel_on_drop();
        let result = tokio::task::spawn_blocking(move || {
            let database = databases.database(&tenant_s, &db_s)?;
            database.run_with(&ctl, &grants, &sql_s, &params)
        })
        .await
        .map_err(|e| Refusal::new(500, "Database", format!("the database task failed: {e}")))?
        .map_err(db_refusal)?;
        let (rows, exec) = result;
        tracing::info!(
            tenant,
            db,
            rows = rows.rows.len(),
            rows_affected = exec.rows_affected,
            "database query"
        );
        let body = serde_json::to_vec(&Answer {
            columns: &rows.columns,
            rows: Rows(&rows.rows),
            rows_affected: exec.rows_affected,
            last_insert_id: exec.last_insert_id,
        })
        .map_err(|e| Refusal::new(500, "Database", format!("encoding the answer: {e}")))?;
        drop(rows);
        let mut resp = Resp::new(crate::api::full_body(body));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }
}
