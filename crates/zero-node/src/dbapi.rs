//! The database endpoint of the management API: `POST /v1/tenants/{t}/db/{db}/query` with a
//! JSON body `{"sql": "…", "params": [...]}`, invoked with `/db/query` (args `tenant`, `db`,
//! `sql`). Every table the statement touches is then checked against the invoker's chain with
//! `/db/read`, `/db/write`, `/db/create` or `/db/delete` (args `tenant`, `db`, `table`), exactly
//! as for a component, so the owner can run migrations and admin queries in their own tenant
//! and nowhere else.

use std::collections::BTreeMap;

use hyper::body::Incoming;
use serde_json::json;
use zero_auth::{Ipld, VerifiedInvocation};

use crate::api::{Api, Resp, expect_arg, json_response, read_body, refuse_unread};
use crate::apps::Refusal;

/// Largest body of a database query request.
const MAX_QUERY_BODY: usize = 4 << 20;

/// Table-level grants from a management invocation's chain.
struct InvocationGrants {
    inv: VerifiedInvocation,
    tenant: String,
}

impl zerodb::Grants for InvocationGrants {
    fn allows(&self, action: zerodb::Action, db: &str, table: &str) -> bool {
        let Ok(cmd) = zero_auth::Command::parse(action.command()) else {
            return false;
        };
        let args = Ipld::Map(BTreeMap::from([
            ("tenant".to_string(), Ipld::String(self.tenant.clone())),
            ("db".to_string(), Ipld::String(db.to_string())),
            ("table".to_string(), Ipld::String(table.to_string())),
        ]));
        self.inv.allows(&cmd, &args).is_ok()
    }
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

fn value_to_json(v: zerodb::Value) -> serde_json::Value {
    match v {
        zerodb::Value::Null => serde_json::Value::Null,
        zerodb::Value::Integer(i) => json!(i),
        zerodb::Value::Real(f) => json!(f),
        zerodb::Value::Text(s) => json!(s),
        zerodb::Value::Blob(b) => json!({"hex": hex::encode(b)}),
    }
}

fn db_refusal(e: zerodb::Error) -> Refusal {
    let (status, name) = match &e {
        zerodb::Error::PermissionDenied { .. } => (403, "PermissionDenied"),
        zerodb::Error::Syntax { .. } => (400, "Syntax"),
        zerodb::Error::Constraint { .. } => (409, "Constraint"),
        zerodb::Error::LimitExceeded { .. } => (413, "LimitExceeded"),
        zerodb::Error::Refused { .. } => (400, "Refused"),
        zerodb::Error::InvalidName(_) => (400, "InvalidArgs"),
        _ => (500, "Database"),
    };
    Refusal::new(status, name, e.to_string())
}

impl Api {
    pub(crate) async fn db_query(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
        tenant: &str,
        db: &str,
    ) -> Result<Resp, Refusal> {
        // Authorized from the headers (the statement is in the invocation's args) before the
        // body is read; a refused body is drained unbuffered.
        let checked = self.authorize(parts, "/db/query").and_then(|inv| {
            expect_arg(&inv.args, "tenant", tenant)?;
            expect_arg(&inv.args, "db", db)?;
            Ok(inv)
        });
        let inv = match checked {
            Ok(inv) => inv,
            Err(r) => return Err(refuse_unread(parts, body, MAX_QUERY_BODY, r).await),
        };
        let bytes = read_body(body, MAX_QUERY_BODY, "the query request").await?;
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
        let grants = InvocationGrants {
            inv,
            tenant: tenant.to_string(),
        };
        let (databases, tenant_s, db_s, sql_s) = (
            self.databases.clone(),
            tenant.to_string(),
            db.to_string(),
            sql.to_string(),
        );
        let result = tokio::task::spawn_blocking(move || {
            let database = databases.database(&tenant_s, &db_s)?;
            database.run(&grants, &sql_s, &params)
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
        Ok(json_response(
            200,
            json!({
                "columns": rows.columns,
                "rows": rows.rows.into_iter().map(|r| r.into_iter().map(value_to_json).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "rows_affected": exec.rows_affected,
                "last_insert_id": exec.last_insert_id,
            }),
        ))
    }
}
