//! The few places where SQLite's SQL differs from PostgreSQL's, for the statements both
//! backends share (`storage/sql/`).

/// `column IN list` for a list bound at `$n` with [`list`]: SQLite has no arrays, so the list
/// travels as one JSON array and `json_each` unpacks it.
pub(crate) fn in_list(column: &str, n: u8) -> String {
    format!("{column} IN (SELECT value FROM json_each(${n}))")
}

/// A list of strings to bind where [`in_list`] expects it.
pub(crate) fn list<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    serde_json::Value::from(items).to_string()
}
