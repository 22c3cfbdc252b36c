//! The few places where PostgreSQL's SQL differs from SQLite's, for the statements both
//! backends share (`storage/sql/`).

/// `column IN list` for a list bound at `$n` with [`list`]: an array, so one plan serves any
/// length.
pub(crate) fn in_list(column: &str, n: u8) -> String {
    format!("{column} = ANY(${n})")
}

/// A list of strings to bind where [`in_list`] expects it.
pub(crate) fn list<S: AsRef<str>>(items: &[S]) -> Vec<String> {
    items.iter().map(|s| s.as_ref().to_owned()).collect()
}
