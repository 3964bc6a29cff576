//! Settings: defaults < `keyturn.toml` < `KEYTURN_*` environment < flags.
//!
//! Each setting is declared once, in the `settings!` list below: its
//! `Settings` field, its type, its environment name, its flag, its default,
//! its help text and its parser. That one list yields the `Settings` struct,
//! the [`SETTINGS`] table (from which `cli.rs` builds the flags and from
//! which the file's keys and the environment are read) and the parsing.
//!
//! Every source is first gathered as text under the setting's name, then
//! parsed once; a bad value stops start-up with one line naming the setting
//! and where the value came from. A key in `keyturn.toml` that is not a
//! setting is an error naming it.

use std::collections::BTreeMap;
use std::fmt;
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
        env: &'static str,
        /// Where the value came from.
        origin: Origin,
        /// What is wrong.
        reason: String,
    },
    /// The config file has a key that is no setting (a typo must not
    /// silently fall back to the default).
    #[error("unknown setting {key:?} in {path}")]
    UnknownSetting {
        /// The key as written in the file.
        key: String,
        /// The file.
        path: PathBuf,
    },
    /// The config file holds a secret but others may read it.
    #[error("{path} holds {key} but is readable by group or others; run chmod 600 on it")]
    ExposedSecret {
        /// The file.
        path: PathBuf,
        /// The secret's key in the file.
        key: &'static str,
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

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The `--config` file.
    File,
    /// A `KEYTURN_*` environment variable.
    Environment,
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "default",
            Self::File => "keyturn.toml",
            Self::Environment => "environment",
            Self::Flag => "flag",
        })
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// One setting, as the file, the environment and the flags know it. Only
/// the entries of [`SETTINGS`] exist (the fields are private), so whatever
/// takes a `&SettingDef` cannot be handed a name that is no setting.
#[derive(Debug)]
pub struct SettingDef {
    name: &'static str,
    env: &'static str,
    flag: Option<&'static str>,
    default: Option<&'static str>,
    secret: bool,
    help: &'static str,
}

impl SettingDef {
    /// The key in `keyturn.toml`, also the `Settings` field.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The environment variable, `KEYTURN_` and the name in capitals.
    pub fn env(&self) -> &'static str {
        self.env
    }

    /// The long flag (the name with `-`), or none for a secret: command
    /// lines are visible to other users.
    pub fn flag(&self) -> Option<&'static str> {
        self.flag
    }

    /// The value when no source sets it.
    pub fn default(&self) -> Option<&'static str> {
        self.default
    }

    /// Whether the value is a secret: never printed, taken verbatim.
    pub fn secret(&self) -> bool {
        self.secret
    }

    /// One line for `--help`.
    pub fn help(&self) -> &'static str {
        self.help
    }

    /// The setting called `name` in `keyturn.toml`.
    pub fn find(name: &str) -> Option<&'static Self> {
        SETTINGS.iter().find(|s| s.name == name)
    }
}

/// Declares every setting once: the `Settings` field (with its doc), then
/// its environment name, flag, default, whether it is secret, its `--help`
/// line and its parser (`&str -> Result<T, String>`; the value is trimmed
/// unless secret). Yields `Settings`, `SETTINGS` and the field-by-field
/// parse.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty {
            env: $env:literal,
            flag: $flag:expr,
            default: $default:expr,
            secret: $secret:literal,
            help: $help:literal,
            parse: $parse:expr $(,)?
        }
    ),* $(,)?) => {
        /// Validated settings.
        #[derive(Debug, Clone)]
        pub struct Settings {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        /// Every setting, in the order of `keyturn --help`.
        pub static SETTINGS: &[SettingDef] = &[
            $( SettingDef {
                name: stringify!($field),
                env: $env,
                flag: $flag,
                default: $default,
                secret: $secret,
                help: $help,
            }, )*
        ];

        impl RawSettings {
            /// Each setting through its own parser.
            fn parse_each(&self) -> Result<Settings, ConfigError> {
                Ok(Settings {
                    $( $field: self.typed(stringify!($field), $parse)?, )*
                })
            }
        }
    };
}

settings! {
    /// Listen address.
    bind: SocketAddr {
        env: "KEYTURN_BIND",
        flag: Some("bind"),
        default: Some("127.0.0.1:8080"),
        secret: false,
        help: "Listen address",
        parse: |v| SocketAddr::from_str(v)
            .map_err(|_| "expected host:port, e.g. 127.0.0.1:8080".into()),
    },
    /// `iss` claim and base of discovery URLs (no trailing slash).
    issuer: String {
        env: "KEYTURN_ISSUER",
        flag: Some("issuer"),
        default: Some("http://127.0.0.1:8080"),
        secret: false,
        help: "Issuer URL",
        parse: parse_issuer,
    },
    /// Default `aud` of access tokens.
    audience: String {
        env: "KEYTURN_AUDIENCE",
        flag: Some("audience"),
        default: Some("keyturn"),
        secret: false,
        help: "Default audience",
        parse: |v| non_empty(v).map(str::to_owned),
    },
    /// `sqlite://…` or `postgres://…`.
    database_url: String {
        env: "KEYTURN_DATABASE_URL",
        flag: Some("database-url"),
        default: Some("sqlite://data/keyturn.db"),
        secret: false,
        help: "sqlite://… or postgres://…",
        parse: parse_database_url,
    },
    /// Directory of `master.key`.
    keys_dir: PathBuf {
        env: "KEYTURN_KEYS_DIR",
        flag: Some("keys-dir"),
        default: Some("keys"),
        secret: false,
        help: "Directory of master.key",
        parse: |v| non_empty(v).map(PathBuf::from),
    },
    /// Base64 master key; when set, `keys_dir/master.key` is not used.
    master_key: Option<SecretString> {
        env: "KEYTURN_MASTER_KEY",
        flag: None,
        default: None,
        secret: true,
        help: "Base64 32-byte master key (no flag: command lines are visible to other users)",
        parse: |v| Ok((!v.is_empty()).then(|| SecretString::from(v.to_owned()))),
    },
    /// Algorithm of new tokens.
    signing_alg: SigningAlg {
        env: "KEYTURN_SIGNING_ALG",
        flag: Some("signing-alg"),
        default: Some("RS256"),
        secret: false,
        help: "RS256 or EdDSA",
        parse: |v| v.parse().map_err(|_| "expected RS256 or EdDSA".into()),
    },
    /// Size of generated RSA keys.
    rsa_bits: usize {
        env: "KEYTURN_RSA_BITS",
        flag: Some("rsa-bits"),
        default: Some("2048"),
        secret: false,
        help: "2048, 3072 or 4096",
        parse: |v| match v {
            "2048" => Ok(2048),
            "3072" => Ok(3072),
            "4096" => Ok(4096),
            _ => Err("expected 2048, 3072 or 4096".into()),
        },
    },
    /// Access token lifetime.
    access_token_ttl: Duration {
        env: "KEYTURN_ACCESS_TOKEN_TTL",
        flag: Some("access-token-ttl"),
        default: Some("15m"),
        secret: false,
        help: "e.g. 15m",
        parse: |v| parse_duration(v, Duration::from_secs(1)),
    },
    /// Refresh token lifetime.
    refresh_token_ttl: Duration {
        env: "KEYTURN_REFRESH_TOKEN_TTL",
        flag: Some("refresh-token-ttl"),
        default: Some("14d"),
        secret: false,
        help: "e.g. 14d",
        parse: |v| parse_duration(v, Duration::from_secs(1)),
    },
    /// Cron expression (with seconds) for rotation.
    rotation_schedule: cron::Schedule {
        env: "KEYTURN_ROTATION_SCHEDULE",
        flag: Some("rotation-schedule"),
        default: Some("0 0 3 * * Sun"),
        secret: false,
        help: "Cron with seconds",
        parse: |v| cron::Schedule::from_str(v).map_err(|e| {
            format!("not a cron expression with seconds (e.g. \"0 0 3 * * Sun\"): {e}")
        }),
    },
    /// Minimum time a key is published before it signs.
    key_prepublish: Duration {
        env: "KEYTURN_KEY_PREPUBLISH",
        flag: Some("key-prepublish"),
        default: Some("1h"),
        secret: false,
        help: "e.g. 1h",
        parse: |v| parse_duration(v, Duration::ZERO),
    },
    /// `Cache-Control: max-age` of the JWKS.
    jwks_max_age: Duration {
        env: "KEYTURN_JWKS_MAX_AGE",
        flag: Some("jwks-max-age"),
        default: Some("300s"),
        secret: false,
        help: "e.g. 300s",
        parse: |v| parse_duration(v, Duration::ZERO),
    },
    /// Clock skew accepted on `exp`/`nbf`/`iat`.
    leeway: Duration {
        env: "KEYTURN_LEEWAY",
        flag: Some("leeway"),
        default: Some("30s"),
        secret: false,
        help: "e.g. 30s",
        parse: |v| parse_duration(v, Duration::ZERO),
    },
    /// Log format.
    log_format: LogFormat {
        env: "KEYTURN_LOG_FORMAT",
        flag: Some("log-format"),
        default: Some("text"),
        secret: false,
        help: "text or json",
        parse: |v| match v {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json".into()),
        },
    },
    /// One log line per HTTP request (security events are always logged and stored).
    access_log: bool {
        env: "KEYTURN_ACCESS_LOG",
        flag: Some("access-log"),
        default: Some("off"),
        secret: false,
        help: "on or off: one log line per HTTP request",
        parse: parse_switch,
    },
    /// The cookie transport for browser front-ends (SPEC §5a).
    cookies: bool {
        env: "KEYTURN_COOKIES",
        flag: Some("cookies"),
        default: Some("off"),
        secret: false,
        help: "on or off: tokens in HttpOnly cookies for browsers",
        parse: parse_switch,
    },
    /// The `Secure` attribute of the cookies (`false` only for local http).
    cookie_secure: bool {
        env: "KEYTURN_COOKIE_SECURE",
        flag: Some("cookie-secure"),
        default: Some("true"),
        secret: false,
        help: "true, or false only for local http",
        parse: parse_bool,
    },
    /// `Domain` of the cookies; none: host-only cookies.
    cookie_domain: Option<String> {
        env: "KEYTURN_COOKIE_DOMAIN",
        flag: Some("cookie-domain"),
        default: None,
        secret: false,
        help: "Domain attribute of the cookies",
        parse: parse_cookie_domain,
    },
    /// Exact origins allowed to call with credentials (CORS); empty: no CORS.
    cors_origins: Vec<String> {
        env: "KEYTURN_CORS_ORIGINS",
        flag: Some("cors-origins"),
        default: Some(""),
        secret: false,
        help: "Comma-separated exact origins, e.g. https://app.example.com",
        parse: parse_origins,
    },
    /// Proxies whose `X-Forwarded-For` is believed; empty: the header is ignored.
    trusted_proxies: Vec<ipnet::IpNet> {
        env: "KEYTURN_TRUSTED_PROXIES",
        flag: Some("trusted-proxies"),
        default: Some(""),
        secret: false,
        help: "Comma-separated proxy addresses or CIDRs, e.g. 10.0.0.0/8,::1",
        parse: parse_trusted_proxies,
    },
    /// A refresh family ends this long after login, however often it is refreshed.
    refresh_absolute_ttl: Duration {
        env: "KEYTURN_REFRESH_ABSOLUTE_TTL",
        flag: Some("refresh-absolute-ttl"),
        default: Some("30d"),
        secret: false,
        help: "e.g. 30d",
        parse: |v| parse_duration(v, Duration::from_secs(1)),
    },
    /// A user's live refresh families (one per login) beyond this are
    /// revoked, oldest first, at the next login.
    refresh_sessions_per_user: u32 {
        env: "KEYTURN_REFRESH_SESSIONS_PER_USER",
        flag: Some("refresh-sessions-per-user"),
        default: Some("10"),
        secret: false,
        help: "1 to 1000",
        parse: |v| match v.parse::<u32>() {
            Ok(n @ 1..=1000) => Ok(n),
            _ => Err("expected a whole number from 1 to 1000".into()),
        },
    },
    /// How long token checks may answer from in-memory status views that
    /// have not reached the store; past it they fail closed (503).
    max_staleness: Duration {
        env: "KEYTURN_MAX_STALENESS",
        flag: Some("max-staleness"),
        default: Some("60s"),
        secret: false,
        help: "2s to 1h, e.g. 60s",
        parse: |v| {
            let d = parse_duration(v, Duration::from_secs(2))?;
            if d > Duration::from_secs(3600) {
                return Err("at most 1h: a longer outage should not be papered over".into());
            }
            Ok(d)
        },
    },
    /// How long audit events are kept.
    audit_retention: Duration {
        env: "KEYTURN_AUDIT_RETENTION",
        flag: Some("audit-retention"),
        default: Some("90d"),
        secret: false,
        help: "e.g. 90d",
        parse: |v| parse_duration(v, Duration::from_secs(3600)),
    },
}

/// Raw values gathered from every source, before parsing.
#[derive(Default, Clone)]
pub struct RawSettings {
    values: BTreeMap<&'static str, (String, Origin)>,
}

impl fmt::Debug for RawSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, (value, origin)) in &self.values {
            let secret = SettingDef::find(name).is_some_and(SettingDef::secret);
            let value = if secret { "[redacted]" } else { value.as_str() };
            map.entry(name, &format_args!("{value:?} ({origin})"));
        }
        map.finish()
    }
}

impl RawSettings {
    /// Defaults, then `config_file` (if given), then the environment.
    pub fn gather(
        config_file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut raw = Self::default();
        for setting in SETTINGS {
            if let Some(value) = setting.default {
                raw.set(setting, value.to_owned(), Origin::Default);
            }
        }
        if let Some(path) = config_file {
            raw.overlay_file(path)?;
        }
        for setting in SETTINGS {
            if let Some(value) = env(setting.env) {
                raw.set(setting, value, Origin::Environment);
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
            let Some(setting) = SettingDef::find(&key) else {
                return Err(ConfigError::UnknownSetting {
                    key,
                    path: path.to_owned(),
                });
            };
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                other => return Err(file_error(format!("{key}: unsupported value {other}"))),
            };
            self.set(setting, text, Origin::File);
        }
        if let Some(key) = self.secret_from_file()
            && readable_by_others(path)
        {
            return Err(ConfigError::ExposedSecret {
                path: path.to_owned(),
                key,
            });
        }
        Ok(())
    }

    /// The first setting taken from the file that is a secret or holds one
    /// (a database URL with a password).
    fn secret_from_file(&self) -> Option<&'static str> {
        SETTINGS.iter().map(SettingDef::name).find(|name| {
            self.values.get(name).is_some_and(|(value, origin)| {
                *origin == Origin::File
                    && (SettingDef::find(name).is_some_and(SettingDef::secret)
                        || url_password(value).is_some())
            })
        })
    }

    /// The value of `setting` as text, as it will be used, and where it
    /// came from; `None` if no source sets it. Secrets, and the password of
    /// a database URL, are replaced by `[redacted]`.
    pub fn shown(&self, setting: &SettingDef) -> Option<(String, Origin)> {
        let (value, origin) = self.values.get(setting.name)?;
        let shown = if setting.secret {
            "[redacted]".to_owned()
        } else if let Some(password) = url_password(value) {
            format!(
                "{}[redacted]{}",
                &value[..password.start],
                &value[password.end..]
            )
        } else {
            value.trim().to_owned()
        };
        Some((shown, *origin))
    }

    /// Overrides one setting from a command-line flag.
    pub fn set_flag(&mut self, setting: &'static SettingDef, value: String) {
        self.set(setting, value, Origin::Flag);
    }

    fn set(&mut self, setting: &'static SettingDef, value: String, origin: Origin) {
        self.values.insert(setting.name, (value, origin));
    }

    /// Parses and validates every setting.
    pub fn parse(&self) -> Result<Settings, ConfigError> {
        let settings = self.parse_each()?;
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

    fn invalid(&self, name: &'static str, reason: String) -> ConfigError {
        let env = SettingDef::find(name).map_or(name, SettingDef::env);
        let origin = self.values.get(name).map_or(Origin::Default, |(_, o)| *o);
        ConfigError::Invalid {
            env,
            origin,
            // One line, whatever the parser said.
            reason: reason.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }

    fn typed<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let value = self.values.get(name).map_or("", |(v, _)| v.as_str());
        let secret = SettingDef::find(name).is_some_and(SettingDef::secret);
        parse(if secret { value } else { value.trim() })
            .map_err(|reason| self.invalid(name, reason))
    }
}

/// Where the password is in a `scheme://user:password@host/…` URL.
fn url_password(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://")? + 3;
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let at = url[start..authority_end].rfind('@')? + start;
    let colon = url[start..at].find(':')? + start;
    (colon + 1 < at).then_some(colon + 1..at)
}

#[cfg(unix)]
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

#[cfg(not(unix))]
fn readable_by_others(_path: &Path) -> bool {
    false
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

fn parse_database_url(v: &str) -> Result<String, String> {
    if v.starts_with("sqlite:") || v.starts_with("postgres://") || v.starts_with("postgresql://") {
        Ok(v.to_owned())
    } else {
        Err("expected sqlite://… or postgres://…".into())
    }
}

fn parse_switch(v: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_cookie_domain(v: &str) -> Result<Option<String>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let valid = v.trim_start_matches('.').split('.').all(|label| {
        !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if valid {
        Ok(Some(v.to_ascii_lowercase()))
    } else {
        Err("expected a domain name such as example.com".into())
    }
}

/// Exact origins (`scheme://host[:port]`), never `*`: CORS with
/// credentials must name each origin.
/// `10.0.0.0/8, 192.0.2.7, ::1`: networks, or single addresses.
fn parse_trusted_proxies(v: &str) -> Result<Vec<ipnet::IpNet>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|proxy| {
            proxy
                .parse::<ipnet::IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| proxy.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{proxy:?}: expected an IP address or CIDR, e.g. 10.0.0.0/8"))
        })
        .collect()
}

fn parse_origins(v: &str) -> Result<Vec<String>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|origin| {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .ok_or_else(|| {
                    format!("{origin:?}: expected an origin such as https://app.example.com")
                })?;
            if rest.is_empty() || rest.contains(['/', '?', '#', '*', ' ', '@']) {
                return Err(format!(
                    "{origin:?}: expected scheme://host[:port] with no path and no wildcard"
                ));
            }
            Ok(origin.to_ascii_lowercase())
        })
        .collect()
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

    fn setting(name: &str) -> &'static SettingDef {
        SettingDef::find(name).expect("a setting")
    }

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
    fn browser_and_retention_settings() {
        let s = RawSettings::gather(None, env_of(&[]))
            .unwrap()
            .parse()
            .unwrap();
        assert!(!s.access_log && !s.cookies && s.cookie_secure);
        assert_eq!(s.cookie_domain, None);
        assert!(s.cors_origins.is_empty());
        assert_eq!(s.refresh_absolute_ttl, Duration::from_secs(30 * 86400));
        assert_eq!(s.audit_retention, Duration::from_secs(90 * 86400));

        let s = RawSettings::gather(
            None,
            env_of(&[
                ("KEYTURN_COOKIES", "on"),
                (
                    "KEYTURN_CORS_ORIGINS",
                    "https://app.example.com, http://127.0.0.1:3000",
                ),
            ]),
        )
        .unwrap()
        .parse()
        .unwrap();
        assert!(s.cookies);
        assert_eq!(
            s.cors_origins,
            ["https://app.example.com", "http://127.0.0.1:3000"]
        );

        for (env, value) in [
            ("KEYTURN_CORS_ORIGINS", "*"),
            ("KEYTURN_CORS_ORIGINS", "https://app.example.com/path"),
            ("KEYTURN_COOKIES", "yes"),
            ("KEYTURN_COOKIE_SECURE", "off"),
            ("KEYTURN_COOKIE_DOMAIN", "exa mple.com"),
        ] {
            let err = RawSettings::gather(None, env_of(&[(env, value)]))
                .unwrap()
                .parse()
                .expect_err(value);
            assert!(err.to_string().contains(env), "{env}={value}: {err}");
        }
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
        raw.set_flag(setting("audience"), "from-flag".into());
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
    fn unknown_file_setting_is_an_error_naming_it_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyturn.toml");
        std::fs::write(&file, "leeway = \"5s\"\ncolour = \"blue\"\n").unwrap();
        let err = RawSettings::gather(Some(&file), env_of(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("unknown setting \"colour\" in {}", file.display())
        );
    }

    #[test]
    fn every_setting_is_named_alike_in_file_environment_and_flags() {
        for s in SETTINGS {
            assert_eq!(s.env(), format!("KEYTURN_{}", s.name().to_uppercase()));
            if s.secret() {
                assert_eq!(s.flag(), None, "{}: a secret has no flag", s.name());
            } else {
                assert_eq!(s.flag(), Some(s.name().replace('_', "-").as_str()));
            }
            assert!(!s.help().is_empty(), "{}", s.name());
        }
    }

    #[test]
    fn every_secret_is_left_out_of_debug_output() {
        let raw = RawSettings::gather(None, env_of(&[("KEYTURN_MASTER_KEY", "c2VjcmV0")])).unwrap();
        let debug = format!("{raw:?}");
        assert!(!debug.contains("c2VjcmV0"), "{debug}");
        assert!(debug.contains("master_key"), "{debug}");
        assert!(debug.contains("127.0.0.1:8080"), "{debug}");
    }

    #[test]
    fn database_passwords_are_found_and_redacted() {
        assert_eq!(url_password("postgres://u:pw@h/db"), Some(13..15));
        assert_eq!(url_password("postgres://u@h/db"), None);
        assert_eq!(url_password("postgres://h:5432/db"), None);
        assert_eq!(url_password("sqlite://data/a:b@c.db"), None);
        let raw = RawSettings::gather(
            None,
            env_of(&[("KEYTURN_DATABASE_URL", "postgres://u:s3cret@h/db")]),
        )
        .unwrap();
        let (shown, origin) = raw.shown(setting("database_url")).unwrap();
        assert_eq!(shown, "postgres://u:[redacted]@h/db");
        assert_eq!(origin, Origin::Environment);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_with_a_secret_must_be_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyturn.toml");
        for body in [
            "master_key = \"c2VjcmV0\"\n",
            "database_url = \"postgres://u:pw@h/db\"\n",
        ] {
            std::fs::write(&file, body).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
            let err = RawSettings::gather(Some(&file), env_of(&[])).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{err}");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            RawSettings::gather(Some(&file), env_of(&[])).unwrap();
        }
        std::fs::write(&file, "leeway = \"5s\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        RawSettings::gather(Some(&file), env_of(&[])).expect("no secret, no refusal");
    }

    #[test]
    fn a_secret_is_taken_verbatim() {
        let raw = RawSettings::gather(None, env_of(&[("KEYTURN_MASTER_KEY", "  ")])).unwrap();
        let key = raw
            .parse()
            .unwrap()
            .master_key
            .expect("set, not trimmed away");
        assert_eq!(secrecy::ExposeSecret::expose_secret(&key), "  ");
    }

    #[test]
    fn the_configuration_doc_lists_every_setting() {
        let doc = include_str!("../docs/configuration.md");
        for s in SETTINGS {
            let flag = s
                .flag()
                .map_or("(none, by design)".to_owned(), |f| format!("`--{f}`"));
            let row = format!("| `{}` | {flag} |", s.env());
            assert!(doc.contains(&row), "docs/configuration.md lacks {row}");
        }
    }
}
