//! A `[[bridge]]`'s credentials: `user` and `password` (every broker), and
//! NATS's `token` and `credentials_file`, merged with what the URL carries
//! (a key wins over the URL), so that a secret can come from the
//! environment (`COMETBOX_BRIDGE__<N>__PASSWORD`) while the URL stays in the
//! file. Secrets are never shown: [`Secret`]'s `Debug` is `***`, and
//! [`shown_url`] hides them from logs, `/stats` and `--check-config`.

use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

use super::config::Invalid;

/// A password or token: its `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the broker's client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

/// How a NATS bridge authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials.
    None,
    /// `user` and `password` (or `nats://user:password@`).
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: Secret,
    },
    /// `token` (or `nats://token@`).
    Token(Secret),
    /// `credentials_file`: a `.creds` file (a user JWT and its NKey seed),
    /// read at each connection, so that a rotated file is picked up.
    CredentialsFile(PathBuf),
}

/// The keys as written in the table.
pub struct Keys<'a> {
    /// `user`.
    pub user: Option<&'a str>,
    /// `password`.
    pub password: Option<&'a Secret>,
    /// `token`.
    pub token: Option<&'a Secret>,
    /// `credentials_file`.
    pub credentials_file: Option<&'a PathBuf>,
}

impl Keys<'_> {
    /// Sets `user` and `password` into `url` (a key wins over the URL's),
    /// for the clients that read them from it (STOMP, AMQP, Redis).
    pub fn merge_into(&self, url: &mut Url) -> Result<(), Invalid> {
        if let Some(user) = self.user {
            url.set_username(user)
                .map_err(|()| ("user", "this URL cannot carry a user".into()))?;
        }
        if let Some(password) = self.password {
            url.set_password(Some(password.expose()))
                .map_err(|()| ("password", "this URL cannot carry a password".into()))?;
        }
        Ok(())
    }

    /// Refuses the NATS-only keys on another broker.
    pub fn refuse_nats_keys(&self) -> Result<(), Invalid> {
        if self.token.is_some() {
            return Err(("token", "applies only to NATS (nats://, tls://)".into()));
        }
        if self.credentials_file.is_some() {
            return Err((
                "credentials_file",
                "applies only to NATS (nats://, tls://)".into(),
            ));
        }
        Ok(())
    }

    /// A NATS bridge's authentication, from the keys and the URL's user
    /// information (which `url` loses: async-nats takes it as options).
    pub fn nats(&self, url: &mut Url) -> Result<NatsAuth, Invalid> {
        let url_user = decode(url.username());
        let url_password = url.password().map(decode);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let user = self
            .user
            .map(str::to_owned)
            .or(Some(url_user))
            .filter(|u| !u.is_empty());
        let password = self.password.cloned().or(url_password.map(Secret));
        let chosen = [
            user.is_some() || password.is_some(),
            self.token.is_some(),
            self.credentials_file.is_some(),
        ];
        if chosen.iter().filter(|c| **c).count() > 1 {
            return Err((
                "token",
                "user/password, token and credentials_file are exclusive: pick one".into(),
            ));
        }
        if let Some(path) = self.credentials_file {
            std::fs::metadata(path)
                .map_err(|e| ("credentials_file", format!("{}: {e}", path.display())))?;
            return Ok(NatsAuth::CredentialsFile(path.clone()));
        }
        Ok(match (user, password, self.token) {
            (_, _, Some(token)) => NatsAuth::Token(token.clone()),
            (Some(user), Some(password), None) => NatsAuth::UserPassword { user, password },
            // `nats://token@host`: a user without password is a token.
            (Some(token), None, None) => NatsAuth::Token(Secret(token)),
            (None, Some(_), None) => return Err(("user", "is needed with a NATS password".into())),
            (None, None, None) => NatsAuth::None,
        })
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `url` as logs and `/stats` show it: a password as `***`, and a NATS URL's
/// lone user (a token) as `***` too.
pub fn shown_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut shown)
            if shown.password().is_none()
                && matches!(shown.scheme(), "nats" | "tls")
                && !shown.username().is_empty() =>
        {
            let _ = shown.set_username("***");
            shown.to_string()
        }
        _ => crate::config::values::redact_url(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(
        user: Option<&'a str>,
        password: Option<&'a Secret>,
        token: Option<&'a Secret>,
    ) -> Keys<'a> {
        Keys {
            user,
            password,
            token,
            credentials_file: None,
        }
    }

    #[test]
    fn nats_auth_comes_from_the_keys_or_the_url() {
        let pw = Secret::from("p@ss");
        let mut url = Url::parse("tls://u:x%40y@h:4222").unwrap();
        let auth = keys(None, None, None).nats(&mut url).unwrap();
        assert_eq!(
            auth,
            NatsAuth::UserPassword {
                user: "u".into(),
                password: "x@y".into()
            }
        );
        assert_eq!(url.as_str(), "tls://h:4222");
        let mut url = Url::parse("nats://h").unwrap();
        let auth = keys(Some("k"), Some(&pw), None).nats(&mut url).unwrap();
        assert!(
            matches!(auth, NatsAuth::UserPassword { ref password, .. } if password.expose() == "p@ss")
        );
        let mut url = Url::parse("nats://tok@h").unwrap();
        assert_eq!(
            keys(None, None, None).nats(&mut url).unwrap(),
            NatsAuth::Token("tok".into())
        );
        let mut url = Url::parse("nats://u:p@h").unwrap();
        assert_eq!(
            keys(None, None, Some(&pw)).nats(&mut url).unwrap_err().0,
            "token"
        );
        let mut url = Url::parse("nats://h").unwrap();
        assert_eq!(
            keys(None, Some(&pw), None).nats(&mut url).unwrap_err().0,
            "user"
        );
    }

    #[test]
    fn keys_win_over_the_url_and_secrets_are_hidden() {
        let pw = Secret::from("s3cret/!");
        let mut url = Url::parse("amqps://guest:guest@h/%2f").unwrap();
        keys(Some("cb"), Some(&pw), None)
            .merge_into(&mut url)
            .unwrap();
        assert_eq!(url.username(), "cb");
        assert_eq!(shown_url(url.as_str()), "amqps://cb:***@h/%2f");
        assert_eq!(format!("{pw:?}"), "\"***\"");
        assert_eq!(shown_url("nats://tok@h:4222"), "nats://***@h:4222");
        assert_eq!(shown_url("rediss://h:6380"), "rediss://h:6380");
    }
}
