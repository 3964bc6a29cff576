//! Settings through the real binary. One table, `keyturn::config::SETTINGS`,
//! drives `keyturn.toml`, the `KEYTURN_*` variables and the flags; these
//! tests walk that table, so a new setting is covered without a new test.

use std::process::{Command, Output, Stdio};

use keyturn::config::{SETTINGS, SettingDef};

use crate::helpers::{TestApp, spawn_app};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A value `setting` refuses. Empty is refused by every setting today; a
/// setting for which empty means something needs its own entry here.
fn bad_value(setting: &SettingDef) -> &'static str {
    match setting.name() {
        "master_key" => "not base64!",
        "trusted_proxies" => "not-an-address",
        // Empty means "none" for these two.
        "cookie_domain" => "exa mple.com",
        "cors_origins" => "*",
        _ => "",
    }
}

/// A value `setting` accepts that keeps `app`'s store usable: the app's
/// own, else the default.
fn good_value(app: &TestApp, setting: &SettingDef) -> String {
    if let Some((_, value)) = app.env.iter().find(|(k, _)| k == setting.env()) {
        return value.clone();
    }
    if let Some(value) = setting.default() {
        return value.to_owned();
    }
    match setting.name() {
        // The key the app's keys are sealed with.
        "master_key" => std::fs::read_to_string(app.settings.keys_dir.join("master.key"))
            .expect("the app's master.key")
            .trim()
            .to_owned(),
        "cookie_domain" => "example.com".to_owned(),
        other => panic!("{other} has no default: give this test a valid value for it"),
    }
}

/// `keyturn` with the app's environment plus `env`, and a `keyturn.toml`
/// holding `file` (if any) before `args`. A setting in `file` is dropped
/// from the app's environment, so the file's value is the one that counts
/// unless `env` sets it again.
fn keyturn(app: &TestApp, file: &[(&str, &str)], env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyturn"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(
            app.env
                .iter()
                .filter(|(k, _)| !file.iter().any(|(key, _)| in_file_as(k, key)))
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let dir = tempfile::tempdir().expect("temp dir");
    if !file.is_empty() {
        let mut table = toml::Table::new();
        for (key, value) in file {
            table.insert((*key).to_owned(), toml::Value::String((*value).to_owned()));
        }
        let path = dir.path().join("keyturn.toml");
        std::fs::write(&path, table.to_string()).expect("write keyturn.toml");
        // It may hold the master key: private, or it is refused.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod keyturn.toml");
        }
        command.arg("--config").arg(path);
    }
    command.args(args).output().expect("keyturn runs")
}

fn in_file_as(env: &str, key: &str) -> bool {
    SETTINGS.iter().any(|s| s.name() == key && s.env() == env)
}

/// Exit 1 with one line on stderr containing `needle`.
fn assert_refused(out: &Output, needle: &str, case: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{case}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{case}: wanted {needle:?} in {stderr}"
    );
}

fn assert_accepted(out: &Output, case: &str) {
    assert!(out.status.success(), "{case}: {}", text(&out.stderr));
}

#[tokio::test]
async fn every_setting_is_read_from_flag_over_environment_over_file() {
    let app = spawn_app().await;
    for setting in SETTINGS {
        let (name, env) = (setting.name(), setting.env());
        let bad = bad_value(setting);
        let good = good_value(&app, setting);
        let Some(flag) = setting.flag() else {
            // A secret: no flag, and its value is never printed.
            let long = format!("--{}", name.replace('_', "-"));
            let out = keyturn(&app, &[], &[], &[&long, &good, "keys", "list"]);
            assert_eq!(out.status.code(), Some(2), "{long} is no flag");

            let out = keyturn(&app, &[(name, bad)], &[], &["keys", "list"]);
            assert_refused(&out, env, &format!("{name} from the file"));
            let out = keyturn(&app, &[(name, bad)], &[(env, &good)], &["keys", "list"]);
            assert_accepted(&out, &format!("{env} over the file"));
            let out = keyturn(&app, &[(name, &good)], &[(env, bad)], &["keys", "list"]);
            assert_refused(&out, env, &format!("{env} over a good file value"));
            let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
            assert!(!printed.contains(&good), "{name} printed");
            continue;
        };
        let long = format!("--{flag}");

        let out = keyturn(&app, &[(name, bad)], &[], &["keys", "list"]);
        assert_refused(&out, &format!("invalid {env} (keyturn.toml)"), name);

        let out = keyturn(&app, &[(name, bad)], &[(env, bad)], &["keys", "list"]);
        assert_refused(&out, &format!("invalid {env} (environment)"), env);

        let out = keyturn(
            &app,
            &[(name, bad)],
            &[(env, bad)],
            &[&long, bad, "keys", "list"],
        );
        assert_refused(&out, &format!("invalid {env} (flag)"), &long);

        // The flag wins over both, and is global: it works after the subcommand.
        let out = keyturn(
            &app,
            &[(name, bad)],
            &[(env, bad)],
            &["keys", "list", &long, &good],
        );
        assert_accepted(&out, &format!("{long} {good:?} over file and environment"));

        // A good file value stands when nothing overrides it.
        let out = keyturn(&app, &[(name, &good)], &[], &["keys", "list"]);
        assert_accepted(&out, &format!("{name} = {good:?} in the file"));
    }
}

#[tokio::test]
async fn an_unknown_key_in_the_file_is_refused_naming_it_and_the_file() {
    let app = spawn_app().await;
    let out = keyturn(
        &app,
        &[("leeway", "5s"), ("acess_token_ttl", "10m")],
        &[],
        &["keys", "list"],
    );
    assert_refused(&out, "unknown setting \"acess_token_ttl\" in ", "typo");
    assert!(text(&out.stderr).contains("keyturn.toml"));

    // Before any subcommand runs, `serve` included.
    let out = keyturn(&app, &[("colour", "blue")], &[], &["serve"]);
    assert_refused(&out, "unknown setting \"colour\"", "serve");
}

#[tokio::test]
async fn help_lists_every_flag_with_its_variable() {
    let app = spawn_app().await;
    let out = keyturn(&app, &[], &[], &["--help"]);
    assert_accepted(&out, "--help");
    let help = text(&out.stdout);
    for setting in SETTINGS {
        match setting.flag() {
            Some(flag) => {
                assert!(help.contains(&format!("--{flag} <")), "--{flag} in {help}");
                assert!(help.contains(&format!("[{}]", setting.env())), "{help}");
            }
            None => assert!(!help.contains(setting.env()), "{help}"),
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_config_file_with_a_secret_that_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let app = spawn_app().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keyturn.toml");
    let key = good_value(&app, SettingDef::find("master_key").expect("master_key"));
    for body in [
        format!("master_key = \"{key}\"\n"),
        "database_url = \"postgres://keyturn:hunter2@127.0.0.1/keyturn\"\n".to_owned(),
    ] {
        std::fs::write(&path, &body).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        for args in [&["keys", "list"][..], &["serve"][..]] {
            let out = Command::new(env!("CARGO_BIN_EXE_keyturn"))
                .env_clear()
                .envs(
                    app.env
                        .iter()
                        .filter(|(k, _)| k != "KEYTURN_DATABASE_URL")
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                )
                .arg("--config")
                .arg(&path)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("keyturn runs");
            assert_refused(&out, "is readable by group or others; run chmod 600", &body);
            let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
            assert!(
                !printed.contains(&key) && !printed.contains("hunter2"),
                "{printed}"
            );
        }
    }
}
