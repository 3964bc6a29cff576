//! The `keyturn` command line (SPEC §6). Commands call domain functions;
//! they never touch SQL or HTTP types. Exit codes: 0 success, 1 failure with
//! one clear line, 2 bad usage (clap).

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{
    Arg, ArgAction, ArgMatches, Args, CommandFactory as _, FromArgMatches, Parser, Subcommand,
};
use secrecy::SecretString;
use serde_json::json;

use crate::accounts::{NewClient, UserUpdate};
use crate::app::{Application, MasterKeyUse, Services, master_key_location};
use crate::audit::Actor;
use crate::clock::SystemClock;
use crate::config::{RawSettings, SETTINGS, SettingDef, Settings};

mod audit;
pub mod output;

use output::{OutputFormat, Table, print_json, time, unix_time};

/// keyturn: an auth server with rotating asymmetric signing keys.
#[derive(Debug, Parser)]
#[command(name = "keyturn", version, about)]
pub struct Cli {
    #[command(flatten)]
    settings: SettingFlags,
    /// What list and show commands print.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

/// Settings as flags; they override `KEYTURN_*` and `keyturn.toml`. One
/// global `--flag` per entry of [`SETTINGS`] that has one (a secret such as
/// the master key has none: command lines are visible to other users).
#[derive(Debug)]
struct SettingFlags {
    config: Option<PathBuf>,
    flags: Vec<(&'static SettingDef, String)>,
}

impl SettingFlags {
    /// Every source, flags last, before parsing.
    fn gather(&self) -> anyhow::Result<RawSettings> {
        let mut raw = RawSettings::gather(self.config.as_deref(), |k| std::env::var(k).ok())?;
        for (setting, value) in &self.flags {
            raw.set_flag(setting, value.clone());
        }
        Ok(raw)
    }
}

const CONFIG_ARG: &str = "config";

/// The value of argument `id`, taken out of `matches` (as derived code does).
fn take<T: Clone + Send + Sync + 'static>(
    matches: &mut ArgMatches,
    id: &str,
) -> Result<Option<T>, clap::Error> {
    matches
        .try_remove_one::<T>(id)
        .map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, e))
}

impl Args for SettingFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let config = Arg::new(CONFIG_ARG)
            .long("config")
            .global(true)
            .value_name("PATH")
            .value_parser(clap::value_parser!(PathBuf))
            .help("Read settings from this TOML file (keys as in the flag names, with `_`)");
        let settings = SETTINGS.iter().filter_map(|setting| {
            let flag = setting.flag()?;
            Some(
                // The id is the setting's name (e.g. `issuer`), as a derived
                // field would have it.
                Arg::new(setting.name())
                    .long(flag)
                    .global(true)
                    .action(ArgAction::Set)
                    .value_name(setting.env().trim_start_matches("KEYTURN_"))
                    .help(format!("{} [{}]", setting.help(), setting.env())),
            )
        });
        cmd.arg(config).args(settings)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self {
            config: None,
            flags: Vec::new(),
        };
        flags.update_from_arg_matches_mut(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.update_from_arg_matches_mut(&mut matches.clone())
    }

    fn update_from_arg_matches_mut(&mut self, matches: &mut ArgMatches) -> Result<(), clap::Error> {
        if let Some(path) = take::<PathBuf>(matches, CONFIG_ARG)? {
            self.config = Some(path);
        }
        for setting in SETTINGS.iter().filter(|s| s.flag().is_some()) {
            if let Some(value) = take::<String>(matches, setting.name())? {
                self.flags.retain(|(s, _)| s.name() != setting.name());
                self.flags.push((setting, value));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the first start on an empty store makes the master
    /// key and the keys).
    Serve,
    /// Make the master key for a new, empty store (instead of the first
    /// `serve`); refuses a store in use.
    Init,
    /// Inspect the settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script, e.g. `keyturn completions bash > /etc/bash_completion.d/keyturn`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage OAuth clients.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Inspect and manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Work with tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Read the audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective settings and where each comes from (secrets
    /// redacted); exit 1 on a bad value. Starts nothing.
    Check,
}

#[derive(Debug, Subcommand)]
enum ClientsCommand {
    /// Register a client; prints its secret once.
    Add {
        /// Client id.
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// A scope the client may request (repeatable).
        #[arg(long = "scope", value_name = "S")]
        scopes: Vec<String>,
        /// `aud` of its tokens (default: KEYTURN_AUDIENCE).
        #[arg(long, value_name = "A")]
        audience: Option<String>,
        /// A grant type it may use (repeatable): client_credentials (the
        /// default) or refresh_token.
        #[arg(long = "grant-type", value_name = "G")]
        grant_types: Vec<String>,
    },
    /// List clients (never their secrets).
    List,
    /// One client (never its secret).
    Show {
        /// Client id.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Give a client a new secret (printed once); the old one and every
    /// token issued with it are refused from then on.
    RotateSecret {
        /// Client id.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Delete a client; its tokens are refused from then on.
    #[command(alias = "delete")]
    Remove {
        /// Client id.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Create a user.
    Add {
        /// Username.
        #[arg(allow_hyphen_values = true)]
        name: String,
        /// A role (repeatable), e.g. --role admin.
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
        /// Read the password from one line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// One user.
    Show {
        /// Username.
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Replace a user's roles.
    SetRoles {
        /// Username.
        #[arg(allow_hyphen_values = true)]
        name: String,
        /// A role (repeatable); none removes every role.
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
    },
    /// Change a user's password (revokes their tokens).
    Passwd {
        /// Username.
        #[arg(allow_hyphen_values = true)]
        name: String,
        /// Read the password from one line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user (revokes their tokens).
    Disable {
        /// Username.
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Enable a disabled user.
    Enable {
        /// Username.
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
    /// Delete a user (revokes their tokens).
    Delete {
        /// Username.
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List keys with their states and timestamps (no private material).
    List,
    /// One key, with its state and timestamps (no private material).
    Show {
        /// The key id.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Print the public JWKS.
    Jwks,
    /// Rotate now: next → current, current → retired, a new next.
    Rotate {
        /// Rotate even if the next key has not been published for
        /// KEYTURN_KEY_PREPUBLISH (verifiers then refetch on the new kid).
        #[arg(long)]
        force: bool,
    },
    /// Emergency removal of a key from the JWKS; a replacement signs at once.
    Revoke {
        /// The key id.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Add an RSA (PKCS#8/PKCS#1) or Ed25519 (PKCS#8) PEM private key as the next key.
    Import {
        /// The PEM file.
        pem_file: PathBuf,
    },
    /// Write a new random master key (base64, mode 0600) for a later
    /// `keys rewrap`; the store is not touched. Refuses an existing file.
    NewMasterKey {
        /// Where to write it (default: KEYTURN_KEYS_DIR/master.key.new).
        file: Option<PathBuf>,
    },
    /// Re-seal every private key under a new master key, which becomes the
    /// store's; the current one must be in the settings (docs/key-storage.md).
    Rewrap {
        /// File holding the new base64 key (`-`: standard input); never the
        /// key itself, command lines are visible to other users.
        #[arg(long, value_name = "FILE")]
        new_master_key: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Verify a token against an issuer's published keys and print its claims.
    Verify {
        /// The access token.
        token: String,
        /// The issuer URL (discovery) whose JWKS to trust.
        #[arg(long)]
        issuer: String,
        /// Expected audience (default: KEYTURN_AUDIENCE).
        #[arg(long)]
        audience: Option<String>,
    },
}

/// Parses arguments and runs; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "keyturn",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let raw = match cli.settings.gather() {
        Ok(raw) => raw,
        Err(err) => return fail(&err),
    };
    let settings = match raw.parse() {
        Ok(settings) => settings,
        Err(err) => return fail(&err.into()),
    };
    if let Command::Config(ConfigCommand::Check) = cli.command {
        return match config_check(&raw, cli.output) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => fail(&err),
        };
    }
    let serving = matches!(cli.command, Command::Serve);
    // A CLI command's own audit events are stored in the trail and its
    // result is its one line of output, so they are not echoed to stderr
    // again (`RUST_LOG` brings them back).
    let log = crate::telemetry::init(
        settings.log_format,
        if serving {
            "info"
        } else {
            "warn,keyturn::audit=error"
        },
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, cli.output, settings));
    drop(runtime);
    // Queued log lines come out before the error line.
    drop(log);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", one_line(err));
    ExitCode::FAILURE
}

fn one_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
}

async fn run(command: Command, output: OutputFormat, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(settings).await,
        Command::Init => init(&settings).await,
        Command::Users(cmd) => users(&open(&settings).await?, cmd, output).await,
        Command::Clients(cmd) => clients(&open(&settings).await?, cmd, output).await,
        // Needs no store: it only writes a key file.
        Command::Keys(KeysCommand::NewMasterKey { file }) => new_master_key(&settings, file),
        Command::Keys(cmd) => keys(&open(&settings).await?, &settings, cmd, output).await,
        Command::Token(cmd) => token(&settings, cmd).await,
        Command::Audit(cmd) => audit::run(&open(&settings).await?, cmd, output).await,
        // Handled before the runtime starts.
        Command::Config(_) | Command::Completions { .. } => Ok(()),
    }
}

/// The services, with every change audited as made at the command line
/// (`cli:` and the operator's login name, when known).
async fn open(settings: &Settings) -> anyhow::Result<Services> {
    let mut services = Services::open(settings, Arc::new(SystemClock)).await?;
    let actor = match std::env::var("USER") {
        Ok(user) if !user.is_empty() => Actor::new(format!("cli:{user}"), None),
        _ => Actor::cli(),
    };
    services.accounts = services.accounts.acting(actor.clone());
    services.clients = services.clients.acting(actor.clone());
    services.keys = services.keys.acting(actor);
    Ok(services)
}

/// `config check`: every setting, its value as used and its source.
fn config_check(raw: &RawSettings, output: OutputFormat) -> anyhow::Result<()> {
    let shown: Vec<(&SettingDef, Option<(String, crate::config::Origin)>)> =
        SETTINGS.iter().map(|s| (s, raw.shown(s))).collect();
    match output {
        OutputFormat::Json => print_json(
            &shown
                .iter()
                .map(|(setting, value)| {
                    json!({
                        "setting": setting.name(),
                        "env": setting.env(),
                        "value": value.as_ref().map(|(v, _)| v),
                        "source": value.as_ref().map_or("default".to_owned(), |(_, o)| o.to_string()),
                    })
                })
                .collect::<Vec<_>>(),
        ),
        OutputFormat::Table => {
            let mut table = Table::new(["SETTING", "VALUE", "SOURCE"]);
            for (setting, value) in &shown {
                let (value, source) = value
                    .as_ref()
                    .map_or(("(unset)".to_owned(), "default".to_owned()), |(v, o)| {
                        (if v.is_empty() { "\"\"".to_owned() } else { v.clone() }, o.to_string())
                    });
                table.row([setting.env(), &value, &source]);
            }
            table.print();
            Ok(())
        }
    }
}

async fn init(settings: &Settings) -> anyhow::Result<()> {
    Services::open_with(settings, Arc::new(SystemClock), MasterKeyUse::Initialise).await?;
    println!(
        "initialised: master key at {}; keep it safe and private, then run `keyturn serve`",
        master_key_location(settings)
    );
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let issuer = settings.issuer.clone();
    let master = master_key_location(&settings);
    let app = Application::build(settings).await?;
    let addr = app.local_addr();
    tracing::info!(%addr, "keyturn listening");
    println!("keyturn listening on http://{addr} (issuer {issuer})");
    if app.first_start() {
        println!("First start: created the master key check and the signing keys.");
        println!("  Swagger UI:    {issuer}/docs");
        println!("  JWKS:          {issuer}/.well-known/jwks.json");
        println!(
            "  Add an admin:  keyturn users add admin --role admin   (same settings as this server)"
        );
        println!("  Master key:    {master}   (back it up; without it no key opens)");
    } else {
        println!("Swagger UI: http://{addr}/docs   JWKS: http://{addr}/.well-known/jwks.json");
    }
    app.run_until_stopped().await.context("server failed")
}

fn read_password(from_stdin: bool) -> anyhow::Result<SecretString> {
    let stdin = std::io::stdin();
    if from_stdin {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        let password = password.strip_suffix('\r').unwrap_or(password);
        return Ok(SecretString::from(password.to_owned()));
    }
    if !stdin.is_terminal() {
        bail!(
            "standard input is not a terminal: pass --password-stdin to read the password from it"
        );
    }
    let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
    let second = rpassword::prompt_password("Repeat: ").context("cannot read the password")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(SecretString::from(first))
}

async fn users(services: &Services, cmd: UsersCommand, output: OutputFormat) -> anyhow::Result<()> {
    let accounts = &services.accounts;
    match cmd {
        UsersCommand::Add {
            name,
            roles,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let user = accounts.create(&name, &password, roles).await?;
            println!("created user {} (id {})", user.username, user.id);
        }
        UsersCommand::List => print_users(&accounts.list().await?, output)?,
        UsersCommand::Show { name } => {
            let user = accounts.get(&name).await?;
            print_users(std::slice::from_ref(&user), output)?;
        }
        UsersCommand::SetRoles { name, roles } => {
            let user = accounts
                .update(
                    &name,
                    UserUpdate {
                        roles: Some(roles),
                        ..UserUpdate::default()
                    },
                )
                .await?;
            println!("{}: roles {}", user.username, user.roles.join(","));
        }
        UsersCommand::Passwd {
            name,
            password_stdin,
        } => {
            accounts.get(&name).await?;
            let password = read_password(password_stdin)?;
            accounts
                .update(
                    &name,
                    UserUpdate {
                        password: Some(password),
                        ..UserUpdate::default()
                    },
                )
                .await?;
            println!("{name}: password changed; existing tokens revoked");
        }
        UsersCommand::Disable { name } => {
            set_disabled(services, &name, true).await?;
            println!("{name}: disabled; tokens revoked");
        }
        UsersCommand::Enable { name } => {
            set_disabled(services, &name, false).await?;
            println!("{name}: enabled");
        }
        UsersCommand::Delete { name } => {
            accounts.delete(&name).await?;
            println!("{name}: deleted; tokens revoked");
        }
    }
    Ok(())
}

/// `users list` and `users show`: one table or JSON shape for both.
fn print_users(users: &[crate::accounts::User], output: OutputFormat) -> anyhow::Result<()> {
    let status = |disabled: bool| if disabled { "disabled" } else { "active" };
    match output {
        OutputFormat::Json => print_json(
            &users
                .iter()
                .map(|u| {
                    json!({
                        "id": u.id,
                        "username": u.username,
                        "roles": u.roles,
                        "status": status(u.disabled),
                        "created_at": unix_time(u.created_at),
                    })
                })
                .collect::<Vec<_>>(),
        )?,
        OutputFormat::Table => {
            let mut table = Table::new(["USERNAME", "ID", "STATUS", "CREATED", "ROLES"]);
            for u in users {
                table.row([
                    u.username.as_str(),
                    &u.id,
                    status(u.disabled),
                    &unix_time(u.created_at),
                    &u.roles.join(","),
                ]);
            }
            table.print();
        }
    }
    Ok(())
}

async fn set_disabled(services: &Services, name: &str, disabled: bool) -> anyhow::Result<()> {
    services
        .accounts
        .update(
            name,
            UserUpdate {
                disabled: Some(disabled),
                ..UserUpdate::default()
            },
        )
        .await?;
    Ok(())
}

async fn clients(
    services: &Services,
    cmd: ClientsCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret as _;
    let clients = &services.clients;
    match cmd {
        ClientsCommand::Add {
            id,
            scopes,
            audience,
            grant_types,
        } => {
            let (client, secret) = clients
                .create(NewClient {
                    id,
                    scopes,
                    grant_types: (!grant_types.is_empty()).then_some(grant_types),
                    audience,
                })
                .await?;
            match output {
                OutputFormat::Json => print_json(&json!({
                    "client_id": client.id,
                    "client_secret": secret.expose_secret(),
                }))?,
                OutputFormat::Table => {
                    println!("created client {}", client.id);
                    println!("client_secret: {}", secret.expose_secret());
                }
            }
            eprintln!("(the secret is shown only once; store it now)");
        }
        ClientsCommand::List => print_clients(&clients.list().await?, output)?,
        ClientsCommand::Show { id } => {
            let client = clients.get(&id).await?;
            print_clients(std::slice::from_ref(&client), output)?;
        }
        ClientsCommand::RotateSecret { id } => {
            let (client, secret) = clients.rotate_secret(&id).await?;
            println!("rotated secret of client {}", client.id);
            println!("client_secret: {}", secret.expose_secret());
            eprintln!("(the secret is shown only once; store it now)");
        }
        ClientsCommand::Remove { id } => {
            clients.delete(&id).await?;
            println!("{id}: deleted; its tokens are revoked");
        }
    }
    Ok(())
}

/// `clients list` and `clients show`: one table or JSON shape for both.
fn print_clients(list: &[crate::accounts::Client], output: OutputFormat) -> anyhow::Result<()> {
    let grants = |c: &crate::accounts::Client| -> Vec<&str> {
        c.grant_types.iter().map(|g| g.as_str()).collect()
    };
    match output {
        OutputFormat::Json => print_json(
            &list
                .iter()
                .map(|c| {
                    json!({
                        "client_id": c.id,
                        "created_at": unix_time(c.created_at),
                        "grant_types": grants(c),
                        "audience": c.audience,
                        "scopes": c.scopes,
                    })
                })
                .collect::<Vec<_>>(),
        )?,
        OutputFormat::Table => {
            let mut table = Table::new(["CLIENT_ID", "CREATED", "GRANTS", "AUDIENCE", "SCOPES"]);
            for c in list {
                table.row([
                    c.id.as_str(),
                    &unix_time(c.created_at),
                    &grants(c).join(","),
                    c.audience.as_deref().unwrap_or("(default)"),
                    &c.scopes.join(" "),
                ]);
            }
            table.print();
        }
    }
    Ok(())
}

async fn keys(
    services: &Services,
    settings: &Settings,
    cmd: KeysCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let now = services.clock.now();
    match cmd {
        KeysCommand::List => print_keys(services, output, None).await?,
        KeysCommand::Show { kid } => print_keys(services, output, Some(&kid)).await?,
        KeysCommand::Jwks => {
            let jwks = services.keys.jwks().await?;
            println!("{}", String::from_utf8_lossy(&jwks.body));
        }
        KeysCommand::Rotate { force } => {
            services.keys.rotate(now, force).await?;
            status(output, "rotated; running servers pick it up within seconds");
            print_keys(services, output, None).await?;
        }
        KeysCommand::Revoke { kid } => {
            services.keys.revoke(&kid, now).await?;
            status(
                output,
                &format!("revoked {kid}; running servers refuse its tokens within seconds"),
            );
            print_keys(services, output, None).await?;
        }
        KeysCommand::Import { pem_file } => {
            let pem = std::fs::read_to_string(&pem_file)
                .with_context(|| format!("cannot read {}", pem_file.display()))?;
            let kid = services.keys.import(&pem, now).await?;
            println!("imported {kid} as the next key");
        }
        KeysCommand::Rewrap { new_master_key } => {
            let new = read_new_master_key(&new_master_key)?;
            let count = services.keys.rewrap(&new, now).await?;
            println!(
                "rewrapped {count} private keys under the new master key, now the store's; \
                 running servers holding it reload within seconds (next: make it the only \
                 master key and restart, see docs/key-storage.md)"
            );
        }
        // `run` handles it before opening the store; the same code here.
        KeysCommand::NewMasterKey { file } => new_master_key(settings, file)?,
    }
    Ok(())
}

/// `keys new-master-key [FILE]`.
fn new_master_key(settings: &Settings, file: Option<PathBuf>) -> anyhow::Result<()> {
    let path = file.unwrap_or_else(|| settings.keys_dir.join(crate::keys::NEW_MASTER_KEY_FILE));
    crate::keys::MasterKey::create_file(&path)?;
    println!(
        "new master key written to {} (mode 0600); give it to every instance beside the \
         current one, then run `keyturn keys rewrap --new-master-key {}`",
        path.display(),
        path.display()
    );
    Ok(())
}

/// Whether an argument that names no file is a master key itself.
fn looks_like_a_key(path: &std::path::Path) -> bool {
    path.to_str().is_some_and(|text| {
        crate::keys::MasterKey::from_base64(&SecretString::from(text.to_owned()), "").is_ok()
    })
}

/// The key of `keys rewrap --new-master-key FILE` (`-`: standard input).
fn read_new_master_key(path: &std::path::Path) -> anyhow::Result<crate::keys::MasterKey> {
    use crate::keys::{MasterKey, MasterKeyError};
    use std::io::Read as _;
    let (text, source) = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the new master key from standard input")?;
        (
            SecretString::from(text),
            "the new master key (standard input)".to_owned(),
        )
    } else {
        let source = format!("new master key file {}", path.display());
        match MasterKey::read_file(path) {
            Ok(Some(key)) => return Ok(key),
            // A key typed as the argument is already in the process list:
            // at least it is not echoed into logs too.
            Ok(None) if looks_like_a_key(path) => bail!(
                "--new-master-key takes a file holding the key, never the key itself \
                 (command lines are visible to other users)"
            ),
            Ok(None) => bail!("cannot read {source}: it does not exist"),
            Err(MasterKeyError::Malformed { .. }) => {
                bail!("{source} must hold base64 of exactly 32 bytes")
            }
            Err(err) => return Err(err.into()),
        }
    };
    MasterKey::from_base64(&text, &source).map_err(Into::into)
}

/// A line saying what a command did: on stdout above a table, on stderr
/// when stdout is JSON for a script.
fn status(output: OutputFormat, line: &str) {
    match output {
        OutputFormat::Table => println!("{line}"),
        OutputFormat::Json => eprintln!("{line}"),
    }
}

/// `keys list`, `keys show KID` (`only`), and the keyset after a change.
async fn print_keys(
    services: &Services,
    output: OutputFormat,
    only: Option<&str>,
) -> anyhow::Result<()> {
    let mut info = services.keys.list(services.clock.now()).await?;
    if let Some(kid) = only {
        info.keys.retain(|key| key.kid == kid);
        if info.keys.is_empty() {
            bail!("no key with kid {kid:?} (`keyturn keys list` shows them)");
        }
    }
    match output {
        OutputFormat::Json => print_json(&json!({
            "keys": info.keys.iter().map(|k| json!({
                "kid": k.kid,
                "alg": k.alg.to_string(),
                "state": k.state.as_str(),
                "created_at": time(Some(k.created_at)),
                "published_at": time(Some(k.published_at)),
                "activated_at": k.activated_at.map(|t| time(Some(t))),
                "retired_at": k.retired_at.map(|t| time(Some(t))),
                "revoked_at": k.revoked_at.map(|t| time(Some(t))),
                "prune_at": k.prune_at.map(|t| time(Some(t))),
            })).collect::<Vec<_>>(),
            "next_rotation_at": info.next_rotation_at.map(|t| time(Some(t))),
        })),
        OutputFormat::Table => {
            let mut table = Table::new([
                "KID",
                "ALG",
                "STATE",
                "PUBLISHED",
                "ACTIVATED",
                "RETIRED/REVOKED",
                "PRUNE",
            ]);
            for key in &info.keys {
                table.row([
                    key.kid.clone(),
                    key.alg.to_string(),
                    key.state.to_string(),
                    time(Some(key.published_at)),
                    time(key.activated_at),
                    time(key.revoked_at.or(key.retired_at)),
                    time(key.prune_at),
                ]);
            }
            table.print();
            println!("next rotation: {}", time(info.next_rotation_at));
            Ok(())
        }
    }
}

async fn token(settings: &Settings, cmd: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Verify {
        token,
        issuer,
        audience,
    } = cmd;
    let verifier = crate::verifier::Verifier::builder()
        .issuer_url(issuer)
        .audience([audience.unwrap_or_else(|| settings.audience.clone())])
        .leeway(settings.leeway)
        .build()
        .await
        .context("cannot load the issuer's keys")?;
    let claims = verifier
        .verify::<serde_json::Value>(token.trim())
        .await
        .context("token rejected")?;
    println!("{}", serde_json::to_string_pretty(&claims)?);
    Ok(())
}
