//! zerodb: the tenant's SQLite databases (`zero:db`), with parameters from Rust values and rows
//! into Rust types.
//!
//! ```text
//! use serde::Deserialize;
//! use zerosdk::db::Database;
//!
//! #[derive(Deserialize)]
//! struct Todo { id: i64, title: String, done: bool }
//!
//! let db = Database::open("todo")?;
//! db.execute("INSERT INTO todos (title) VALUES (?)", ("milk",))?;
//! let todos: Vec<Todo> = db.query("SELECT id, title, done FROM todos WHERE done = ?", (false,))?;
//! let n: Option<i64> = db.query_one("SELECT count(*) FROM todos", ())?;
//! ```
//!
//! Parameters are a tuple of values (`(id, "text")`, `()` for none), an array or a
//! `Vec<Value>`; each value is an integer, float, bool (stored as 0 or 1), text, bytes,
//! `Option` (none is NULL) or a [`Value`]. Rows become any `serde` type: a struct or map by
//! column name, a tuple by position, a single value for a single column; an INTEGER 0 or 1
//! reads as a bool. Every statement is checked against the component's capability token; a
//! refusal is [`Error::PermissionDenied`] with the node's message saying what to grant.

use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer};

mod bindings {
    wit_bindgen::generate!({
        path: "wit/zero-db",
        world: "zero:db/imports",
    });
}

use bindings::zero::db::db as wit;

pub use wit::{
    Action, ExecResult, LimitExceeded, LimitKind, PermissionDenied, Rows, SyntaxError, Value,
};

/// What went wrong: the node's answer, or a row that does not fit the Rust type.
#[derive(Debug, Clone)]
pub enum Error {
    /// The component's capability token does not grant the action on the table (or any access
    /// to the database); the message says what to grant.
    PermissionDenied(PermissionDenied),
    /// The SQL does not parse, or names a table or column that does not exist.
    Syntax(SyntaxError),
    /// A UNIQUE, NOT NULL, CHECK, FOREIGN KEY or PRIMARY KEY constraint failed.
    Constraint(String),
    /// A limit was reached; the statement had no effect.
    LimitExceeded(LimitExceeded),
    /// A bad database name or bad parameters.
    Invalid(String),
    /// A feature zerodb never allows (ATTACH, settings PRAGMAs, BEGIN/COMMIT, …).
    Refused(String),
    /// Any other failure (I/O, database busy).
    Other(String),
    /// A row did not fit the Rust type it was read into (the message names the column).
    Mapping(String),
}

impl Error {
    /// The message: the node's, or the mapping's.
    pub fn message(&self) -> String {
        match self {
            Error::PermissionDenied(p) => p.message.clone(),
            Error::Syntax(s) => s.message.clone(),
            Error::LimitExceeded(l) => l.message.clone(),
            Error::Constraint(m)
            | Error::Invalid(m)
            | Error::Refused(m)
            | Error::Other(m)
            | Error::Mapping(m) => m.clone(),
        }
    }

    /// Whether this is SQLite's "no such table" (a table not created yet).
    pub fn is_no_such_table(&self) -> bool {
        matches!(self, Error::Syntax(s) if s.message.contains("no such table"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Error::PermissionDenied(_) => "permission denied",
            Error::Syntax(_) => "SQL error",
            Error::Constraint(_) => "constraint failed",
            Error::LimitExceeded(_) => "limit exceeded",
            Error::Invalid(_) => "invalid",
            Error::Refused(_) => "refused",
            Error::Other(_) => "database error",
            Error::Mapping(_) => "row mapping",
        };
        write!(f, "zerodb: {kind}: {}", self.message())
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Error {
        match e {
            wit::Error::PermissionDenied(p) => Error::PermissionDenied(p),
            wit::Error::Syntax(s) => Error::Syntax(s),
            wit::Error::Constraint(m) => Error::Constraint(m),
            wit::Error::LimitExceeded(l) => Error::LimitExceeded(l),
            wit::Error::Invalid(m) => Error::Invalid(m),
            wit::Error::Refused(m) => Error::Refused(m),
            wit::Error::Other(m) => Error::Other(m),
        }
    }
}

/// A Rust value usable as a statement parameter.
pub trait ToValue {
    /// The SQL value.
    fn to_value(&self) -> Value;
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Integer(i64::from(*self))
            }
        }
    )*};
}
int_value!(i8, i16, i32, i64, u8, u16, u32);

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}

impl ToValue for f32 {
    fn to_value(&self) -> Value {
        Value::Real(f64::from(*self))
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

/// A statement's parameters, in placeholder order.
pub trait Params {
    /// The values.
    fn to_values(&self) -> Vec<Value>;
}

impl Params for () {
    fn to_values(&self) -> Vec<Value> {
        Vec::new()
    }
}

impl Params for Vec<Value> {
    fn to_values(&self) -> Vec<Value> {
        self.clone()
    }
}

impl Params for [Value] {
    fn to_values(&self) -> Vec<Value> {
        self.to_vec()
    }
}

impl<T: ToValue, const N: usize> Params for [T; N] {
    fn to_values(&self) -> Vec<Value> {
        self.iter().map(ToValue::to_value).collect()
    }
}

impl<P: Params + ?Sized> Params for &P {
    fn to_values(&self) -> Vec<Value> {
        (**self).to_values()
    }
}

macro_rules! tuple_params {
    ($($name:ident),+) => {
        impl<$($name: ToValue),+> Params for ($($name,)+) {
            #[allow(non_snake_case)]
            fn to_values(&self) -> Vec<Value> {
                let ($($name,)+) = self;
                vec![$($name.to_value()),+]
            }
        }
    };
}
tuple_params!(A);
tuple_params!(A, B);
tuple_params!(A, B, C);
tuple_params!(A, B, C, D);
tuple_params!(A, B, C, D, E);
tuple_params!(A, B, C, D, E, F);
tuple_params!(A, B, C, D, E, F, G);
tuple_params!(A, B, C, D, E, F, G, H);

/// One statement of a [`Database::batch`].
#[derive(Debug, Clone)]
pub struct Statement {
    sql: String,
    params: Vec<Value>,
}

impl Statement {
    /// `sql` with `params`.
    pub fn new(sql: impl Into<String>, params: impl Params) -> Statement {
        Statement {
            sql: sql.into(),
            params: params.to_values(),
        }
    }
}

/// An open database of the caller's tenant.
#[derive(Debug)]
pub struct Database {
    inner: wit::Database,
}

impl Database {
    /// Opens (creating it if needed) the database `name` of the caller's tenant (1 to 63
    /// characters of `a-z`, `0-9`, `-`, `_`).
    pub fn open(name: &str) -> Result<Database, Error> {
        Ok(Database {
            inner: wit::Database::open(name)?,
        })
    }

    /// Runs a query and reads each row into a `T` (see the [module](self) docs).
    pub fn query<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: impl Params,
    ) -> Result<Vec<T>, Error> {
        let rows = self.query_rows(sql, params)?;
        from_rows(&rows)
    }

    /// Runs a query and reads its first row into a `T`, if there is one.
    pub fn query_one<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: impl Params,
    ) -> Result<Option<T>, Error> {
        let rows = self.query_rows(sql, params)?;
        match rows.rows.first() {
            Some(row) => from_row(&rows.columns, row).map(Some),
            None => Ok(None),
        }
    }

    /// Runs a query and returns its rows as SQL values.
    pub fn query_rows(&self, sql: &str, params: impl Params) -> Result<Rows, Error> {
        Ok(self.inner.query(sql, &params.to_values())?)
    }

    /// Runs a statement that changes data and says what it did.
    pub fn execute(&self, sql: &str, params: impl Params) -> Result<ExecResult, Error> {
        Ok(self.inner.execute(sql, &params.to_values())?)
    }

    /// Runs the statements in one transaction: all take effect, or (on the first error, which
    /// is returned) none does.
    pub fn batch(
        &self,
        statements: impl IntoIterator<Item = Statement>,
    ) -> Result<Vec<ExecResult>, Error> {
        let statements: Vec<wit::Statement> = statements
            .into_iter()
            .map(|s| wit::Statement {
                sql: s.sql,
                params: s.params,
            })
            .collect();
        Ok(self.inner.batch(&statements)?)
    }

    /// Runs `op`; if it fails because a table does not exist yet, runs `schema` (e.g.
    /// `CREATE TABLE IF NOT EXISTS …`, which needs `/db/create`) and `op` again.
    pub fn with_schema<T>(
        &self,
        schema: &str,
        op: impl Fn(&Database) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match op(self) {
            Err(e) if e.is_no_such_table() => {
                self.execute(schema, ())?;
                op(self)
            }
            other => other,
        }
    }
}

/// Reads every row of `rows` into a `T`.
pub fn from_rows<T: DeserializeOwned>(rows: &Rows) -> Result<Vec<T>, Error> {
    rows.rows
        .iter()
        .map(|r| from_row(&rows.columns, r))
        .collect()
}

/// Reads one row (with its column names) into a `T`.
pub fn from_row<T: DeserializeOwned>(columns: &[String], row: &[Value]) -> Result<T, Error> {
    T::deserialize(RowDeserializer { columns, row }).map_err(|e| Error::Mapping(e.0))
}

/// A row mapping error.
#[derive(Debug)]
struct MapError(String);

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MapError {}

impl de::Error for MapError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        MapError(msg.to_string())
    }
}

struct RowDeserializer<'a> {
    columns: &'a [String],
    row: &'a [Value],
}

impl<'a> RowDeserializer<'a> {
    /// A single-column row read as a plain value.
    fn single(&self) -> Result<ValueDeserializer<'a>, MapError> {
        match (self.columns.first(), self.row) {
            (Some(col), [v]) => Ok(ValueDeserializer {
                column: col,
                value: v,
            }),
            _ => Err(MapError(format!(
                "a row of {} columns ({}) cannot be read as a single value; read it into a struct or tuple",
                self.row.len(),
                self.columns.join(", ")
            ))),
        }
    }
}

macro_rules! forward_single {
    ($($method:ident),*) => {$(
        fn $method<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, MapError> {
            self.single()?.$method(visitor)
        }
    )*};
}

impl<'de, 'a> de::Deserializer<'de> for RowDeserializer<'a> {
    type Error = MapError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, MapError> {
        self.deserialize_map(visitor)
    }

    forward_single!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_identifier
    );

    fn deserialize_unit_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, MapError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, MapError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, MapError> {
        visitor.visit_seq(de::value::SeqDeserializer::new(
            self.columns
                .iter()
                .zip(self.row)
                .map(|(column, value)| ValueDeserializer { column, value }),
        ))
    }

    fn deserialize_tuple<V: de::Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, MapError> {
        if len != self.row.len() {
            return Err(MapError(format!(
                "the row has {} columns ({}) but the tuple has {len} elements",
                self.row.len(),
                self.columns.join(", ")
            )));
        }
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, MapError> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, MapError> {
        visitor.visit_map(de::value::MapDeserializer::new(
            self.columns
                .iter()
                .zip(self.row)
                .map(|(column, value)| (column.as_str(), ValueDeserializer { column, value })),
        ))
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, MapError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, MapError> {
        self.single()?.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_ignored_any<V: de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, MapError> {
        visitor.visit_unit()
    }
}

/// One cell.
struct ValueDeserializer<'a> {
    column: &'a str,
    value: &'a Value,
}

impl ValueDeserializer<'_> {
    fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "NULL",
            Value::Integer(_) => "an INTEGER",
            Value::Real(_) => "a REAL",
            Value::Text(_) => "TEXT",
            Value::Blob(_) => "a BLOB",
        }
    }

    fn mismatch(&self, want: &str) -> MapError {
        MapError(format!(
            "column `{}` is {}, which cannot be read as {want}",
            self.column,
            self.kind()
        ))
    }
}

impl<'de> IntoDeserializer<'de, MapError> for ValueDeserializer<'_> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'_> {
    type Error = MapError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, MapError> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Integer(i) => visitor.visit_i64(*i),
            Value::Real(r) => visitor.visit_f64(*r),
            Value::Text(t) => visitor.visit_str(t),
            Value::Blob(b) => visitor.visit_bytes(b),
        }
        .map_err(|e: MapError| MapError(format!("column `{}`: {e}", self.column)))
    }

    fn deserialize_bool<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, MapError> {
        match self.value {
            Value::Integer(0) => visitor.visit_bool(false),
            Value::Integer(1) => visitor.visit_bool(true),
            _ => Err(self.mismatch("a bool (INTEGER 0 or 1)")),
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, MapError> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, MapError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, MapError> {
        match self.value {
            Value::Text(t) => visitor.visit_enum(t.as_str().into_deserializer()),
            _ => Err(self.mismatch("an enum (TEXT naming a variant)")),
        }
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn rows() -> Rows {
        Rows {
            columns: vec!["id".into(), "title".into(), "done".into(), "note".into()],
            rows: vec![
                vec![
                    Value::Integer(1),
                    Value::Text("milk".into()),
                    Value::Integer(0),
                    Value::Null,
                ],
                vec![
                    Value::Integer(2),
                    Value::Text("eggs".into()),
                    Value::Integer(1),
                    Value::Text("x".into()),
                ],
            ],
        }
    }

    #[test]
    fn rows_map_to_structs_tuples_and_single_values() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct Todo {
            id: i64,
            title: String,
            done: bool,
            note: Option<String>,
        }
        let todos: Vec<Todo> = from_rows(&rows()).unwrap();
        assert_eq!(
            todos[0],
            Todo {
                id: 1,
                title: "milk".into(),
                done: false,
                note: None
            }
        );
        assert_eq!(todos[1].note.as_deref(), Some("x"));
        assert!(todos[1].done);
        let t: (i64, String, bool, Option<String>) =
            from_row(&rows().columns, &rows().rows[0]).unwrap();
        assert_eq!(t.1, "milk");
        let n: i64 = from_row(&["n".into()], &[Value::Integer(7)]).unwrap();
        assert_eq!(n, 7);
        let m: std::collections::BTreeMap<String, serde_json::Value> =
            from_row(&rows().columns, &rows().rows[1]).unwrap();
        assert_eq!(m["title"], "eggs");
        // Fewer fields than columns: the others are ignored.
        #[derive(Deserialize)]
        struct Id {
            id: u32,
        }
        let ids: Vec<Id> = from_rows(&rows()).unwrap();
        assert_eq!(ids[1].id, 2);
    }

    #[test]
    fn a_row_that_does_not_fit_names_the_column() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Wrong {
            title: i64,
        }
        let e = from_rows::<Wrong>(&rows()).unwrap_err();
        assert!(matches!(e, Error::Mapping(_)));
        assert!(e.message().contains("column `title`"), "{e}");
        let e = from_row::<bool>(&["n".into()], &[Value::Integer(5)]).unwrap_err();
        assert!(e.message().contains("cannot be read as a bool"), "{e}");
        let e = from_row::<i64>(&rows().columns, &rows().rows[0]).unwrap_err();
        assert!(
            e.message().contains("cannot be read as a single value"),
            "{e}"
        );
        let e = from_row::<(i64, String)>(&rows().columns, &rows().rows[0]).unwrap_err();
        assert!(e.message().contains("the tuple has 2 elements"), "{e}");
    }

    #[test]
    fn parameters_come_from_rust_values() {
        let v = (1i64, "a", true, None::<String>, vec![1u8], 2.5f64).to_values();
        assert_eq!(
            format!("{v:?}"),
            format!(
                "{:?}",
                vec![
                    Value::Integer(1),
                    Value::Text("a".into()),
                    Value::Integer(1),
                    Value::Null,
                    Value::Blob(vec![1]),
                    Value::Real(2.5)
                ]
            )
        );
        assert!(().to_values().is_empty());
        assert_eq!([3u32, 4].to_values().len(), 2);
    }
}
