//! A script's reply as Redis hands it back: a list of integers and
//! strings, read by position. Only `calls.rs` reads them, into typed
//! values; nothing outside `store::redis` sees a position.

use redis::Value;

/// Arguments of one script call, after the shared ones.
pub(super) type Args = Vec<Vec<u8>>;

/// One script reply, decoded loosely: Lua gives integers and strings.
pub(super) struct Reply(pub(super) Vec<Value>);

impl Reply {
    /// Item `i` as an integer (0 if absent or not a number).
    pub fn int(&self, i: usize) -> i64 {
        match self.0.get(i) {
            Some(Value::Int(n)) => *n,
            Some(Value::BulkString(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Item `i` as text (empty if absent).
    pub fn text(&self, i: usize) -> String {
        match self.0.get(i) {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            Some(Value::Int(n)) => n.to_string(),
            _ => String::new(),
        }
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Value> for Reply {
    fn from(value: Value) -> Self {
        Reply(match value {
            Value::Array(items) => items,
            other => vec![other],
        })
    }
}
