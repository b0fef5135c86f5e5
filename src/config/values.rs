//! Value readers and writers every section's settings share: a list
//! that the environment spells comma-separated, a URL shown without its
//! password. A leaf: it imports nothing of cometbox, so any section's
//! config (store, hooks, bridges) can use it without depending on the
//! whole of `config`.

use serde::{Deserialize, Deserializer};

/// A list, or (from the environment) a comma-separated string.
pub fn list_or_comma_separated<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(match ListOrString::deserialize(d)? {
        ListOrString::List(list) => list,
        ListOrString::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// `url` with any password replaced by `***` (unparsable: as it is).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut shown) if shown.password().is_some() => {
            let _ = shown.set_password(Some("***"));
            shown.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_url("amqp://u:pw@h/v"), "amqp://u:***@h/v");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("http://h/a@b"), "http://h/a@b");
    }
}
