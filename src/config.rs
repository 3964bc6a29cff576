//! Settings: defaults < `keyturn.toml` < `KEYTURN_*` environment < flags.
//!
//! Every source is first gathered as text under the setting's name, then
//! parsed once; a bad value stops start-up with one line naming the setting
//! and where the value came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

use crate::keys::SigningAlg;

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value did not parse or is out of range.
    #[error("invalid {env} ({origin}): {reason}")]
    Invalid {
        /// The setting's environment name.
        env: String,
        /// Where the value came from.
        origin: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The config file could not be read or parsed.
    #[error("cannot read config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub bind: SocketAddr,
    /// `iss` claim and base of discovery URLs (no trailing slash).
    pub issuer: String,
    /// Default `aud` of access tokens.
    pub audience: String,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Directory of `master.key`.
    pub keys_dir: PathBuf,
    /// Base64 master key; when set, `keys_dir/master.key` is not used.
    pub master_key: Option<SecretString>,
    /// Algorithm of new tokens.
    pub signing_alg: SigningAlg,
    /// Size of generated RSA keys.
    pub rsa_bits: usize,
    /// Access token lifetime.
    pub access_token_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_token_ttl: Duration,
    /// Cron expression (with seconds) for rotation.
    pub rotation_schedule: cron::Schedule,
    /// Minimum time a key is published before it signs.
    pub key_prepublish: Duration,
    /// `Cache-Control: max-age` of the JWKS.
    pub jwks_max_age: Duration,
    /// Clock skew accepted on `exp`/`nbf`/`iat`.
    pub leeway: Duration,
    /// Log format.
    pub log_format: LogFormat,
}

/// Every setting: (name in keyturn.toml and flags, environment name, default).
pub const SETTINGS: &[(&str, &str, Option<&str>)] = &[
    ("bind", "KEYTURN_BIND", Some("127.0.0.1:8080")),
    ("issuer", "KEYTURN_ISSUER", Some("http://127.0.0.1:8080")),
    ("audience", "KEYTURN_AUDIENCE", Some("keyturn")),
    (
        "database_url",
        "KEYTURN_DATABASE_URL",
        Some("sqlite://data/keyturn.db"),
    ),
    ("keys_dir", "KEYTURN_KEYS_DIR", Some("keys")),
    ("master_key", "KEYTURN_MASTER_KEY", None),
    ("signing_alg", "KEYTURN_SIGNING_ALG", Some("RS256")),
    ("rsa_bits", "KEYTURN_RSA_BITS", Some("2048")),
    ("access_token_ttl", "KEYTURN_ACCESS_TOKEN_TTL", Some("15m")),
    (
        "refresh_token_ttl",
        "KEYTURN_REFRESH_TOKEN_TTL",
        Some("14d"),
    ),
    (
        "rotation_schedule",
        "KEYTURN_ROTATION_SCHEDULE",
        Some("0 0 3 * * Sun"),
    ),
    ("key_prepublish", "KEYTURN_KEY_PREPUBLISH", Some("1h")),
    ("jwks_max_age", "KEYTURN_JWKS_MAX_AGE", Some("300s")),
    ("leeway", "KEYTURN_LEEWAY", Some("30s")),
    ("log_format", "KEYTURN_LOG_FORMAT", Some("text")),
];

/// Raw values gathered from every source, before parsing.
#[derive(Debug, Default, Clone)]
pub struct RawSettings {
    values: BTreeMap<&'static str, (String, &'static str)>,
}

impl RawSettings {
    /// Defaults, then `config_file` (if given), then the environment.
    pub fn gather(
        config_file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut raw = Self::default();
        for (name, _, default) in SETTINGS {
            if let Some(value) = default {
                raw.values.insert(name, ((*value).to_owned(), "default"));
            }
        }
        if let Some(path) = config_file {
            raw.overlay_file(path)?;
        }
        for (name, env_name, _) in SETTINGS {
            if let Some(value) = env(env_name) {
                raw.values.insert(name, (value, "environment"));
            }
        }
        Ok(raw)
    }

    fn overlay_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let file_error = |reason: String| ConfigError::File {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_error(e.message().to_owned()))?;
        for (key, value) in table {
            let Some((name, _, _)) = SETTINGS.iter().find(|(n, _, _)| *n == key) else {
                return Err(file_error(format!("unknown setting {key:?}")));
            };
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                other => return Err(file_error(format!("{key}: unsupported value {other}"))),
            };
            self.values.insert(name, (text, "keyturn.toml"));
        }
        Ok(())
    }

    /// Overrides one setting from a command-line flag.
    pub fn set_flag(&mut self, name: &str, value: String) {
        if let Some((name, _, _)) = SETTINGS.iter().find(|(n, _, _)| *n == name) {
            self.values.insert(name, (value, "flag"));
        }
    }

    fn get(&self, name: &str) -> Option<&(String, &'static str)> {
        self.values.get(name)
    }

    /// Parses and validates every setting.
    pub fn parse(&self) -> Result<Settings, ConfigError> {
        let settings = Settings {
            bind: self.typed("bind", |v| {
                SocketAddr::from_str(v)
                    .map_err(|_| "expected host:port, e.g. 127.0.0.1:8080".into())
            })?,
            issuer: self.typed("issuer", parse_issuer)?,
            audience: self.typed("audience", |v| non_empty(v).map(str::to_owned))?,
            database_url: self.typed("database_url", |v| {
                if v.starts_with("sqlite:")
                    || v.starts_with("postgres://")
                    || v.starts_with("postgresql://")
                {
                    Ok(v.to_owned())
                } else {
                    Err("expected sqlite://… or postgres://…".into())
                }
            })?,
            keys_dir: self.typed("keys_dir", |v| non_empty(v).map(PathBuf::from))?,
            master_key: match self.get("master_key") {
                Some((v, _)) if !v.is_empty() => Some(SecretString::from(v.clone())),
                _ => None,
            },
            signing_alg: self.typed("signing_alg", |v| {
                v.parse().map_err(|_| "expected RS256 or EdDSA".into())
            })?,
            rsa_bits: self.typed("rsa_bits", |v| match v {
                "2048" | "3072" | "4096" => Ok(v.parse().unwrap_or(2048)),
                _ => Err("expected 2048, 3072 or 4096".into()),
            })?,
            access_token_ttl: self.typed("access_token_ttl", |v| {
                parse_duration(v, Duration::from_secs(1))
            })?,
            refresh_token_ttl: self.typed("refresh_token_ttl", |v| {
                parse_duration(v, Duration::from_secs(1))
            })?,
            rotation_schedule: self.typed("rotation_schedule", |v| {
                cron::Schedule::from_str(v).map_err(|e| {
                    format!("not a cron expression with seconds (e.g. \"0 0 3 * * Sun\"): {e}")
                })
            })?,
            key_prepublish: self.typed("key_prepublish", |v| parse_duration(v, Duration::ZERO))?,
            jwks_max_age: self.typed("jwks_max_age", |v| parse_duration(v, Duration::ZERO))?,
            leeway: self.typed("leeway", |v| parse_duration(v, Duration::ZERO))?,
            log_format: self.typed("log_format", |v| match v {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected text or json".into()),
            })?,
        };
        if settings.key_prepublish < settings.jwks_max_age {
            return Err(self.invalid(
                "key_prepublish",
                format!(
                    "must be at least KEYTURN_JWKS_MAX_AGE ({}), or verifiers holding a cached \
                     JWKS would not know the new key when it starts signing",
                    humantime::format_duration(settings.jwks_max_age)
                ),
            ));
        }
        Ok(settings)
    }

    fn invalid(&self, name: &str, reason: String) -> ConfigError {
        let env = SETTINGS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map_or(name, |(_, e, _)| e)
            .to_owned();
        let origin = self.get(name).map_or("default", |(_, o)| o);
        ConfigError::Invalid {
            env,
            origin,
            // One line, whatever the parser said.
            reason: reason.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }

    fn typed<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let value = self.get(name).map_or("", |(v, _)| v.as_str());
        parse(value.trim()).map_err(|reason| self.invalid(name, reason))
    }
}

fn non_empty(v: &str) -> Result<&str, String> {
    if v.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(v)
    }
}

fn parse_issuer(v: &str) -> Result<String, String> {
    let v = v.trim_end_matches('/');
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or("expected an http(s) URL")?;
    if rest.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err("expected an http(s) URL without query or fragment".into());
    }
    Ok(v.to_owned())
}

fn parse_duration(v: &str, min: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(v)
        .map_err(|e| format!("expected a duration like 15m, 300s or 14d ({e})"))?;
    if d < min {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(min)
        ));
    }
    Ok(d)
}

impl Settings {
    /// Settings from defaults and the process environment only.
    pub fn from_env() -> Result<Self, ConfigError> {
        RawSettings::gather(None, |k| std::env::var(k).ok())?.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_parse() {
        let s = RawSettings::gather(None, env_of(&[]))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.access_token_ttl, Duration::from_secs(900));
        assert_eq!(s.refresh_token_ttl, Duration::from_secs(14 * 86400));
        assert_eq!(s.signing_alg, SigningAlg::Rs256);
    }

    #[test]
    fn precedence_flag_over_env_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyturn.toml");
        std::fs::write(
            &file,
            "audience = \"from-file\"\nleeway = \"5s\"\nrsa_bits = 3072\n",
        )
        .unwrap();
        let mut raw = RawSettings::gather(
            Some(&file),
            env_of(&[("KEYTURN_AUDIENCE", "from-env"), ("KEYTURN_LEEWAY", "7s")]),
        )
        .unwrap();
        raw.set_flag("audience", "from-flag".into());
        let s = raw.parse().unwrap();
        assert_eq!(s.audience, "from-flag");
        assert_eq!(s.leeway, Duration::from_secs(7));
        assert_eq!(s.rsa_bits, 3072);
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (env, value) in [
            ("KEYTURN_ACCESS_TOKEN_TTL", "forever"),
            ("KEYTURN_SIGNING_ALG", "HS256"),
            ("KEYTURN_RSA_BITS", "1024"),
            ("KEYTURN_BIND", "nowhere"),
            ("KEYTURN_ROTATION_SCHEDULE", "every sunday"),
            ("KEYTURN_LOG_FORMAT", "xml"),
            ("KEYTURN_DATABASE_URL", "mysql://x"),
        ] {
            let err = RawSettings::gather(None, env_of(&[(env, value)]))
                .unwrap()
                .parse()
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("invalid {env} (environment)")),
                "{err}"
            );
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn prepublish_shorter_than_max_age_is_refused() {
        let err = RawSettings::gather(
            None,
            env_of(&[
                ("KEYTURN_KEY_PREPUBLISH", "1m"),
                ("KEYTURN_JWKS_MAX_AGE", "5m"),
            ]),
        )
        .unwrap()
        .parse()
        .unwrap_err();
        assert!(err.to_string().contains("KEYTURN_KEY_PREPUBLISH"));
    }

    #[test]
    fn unknown_file_setting_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyturn.toml");
        std::fs::write(&file, "colour = \"blue\"\n").unwrap();
        assert!(RawSettings::gather(Some(&file), env_of(&[])).is_err());
    }
}
