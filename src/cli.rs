//! The `parley` command line: serving, and the administrator's commands.
#![allow(clippy::print_stdout)] // A command line prints its results.

use std::{
    io::{BufRead as _, IsTerminal as _, Write as _},
    path::PathBuf,
    sync::Arc,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use crate::{
    config::{Config, LogFormat},
    service::{
        Services,
        accounts::{AccountService, NewAccount},
        now_ms, secrets,
    },
    storage::{RegistrationToken, Storage},
};

pub const DEFAULT_CONFIG: &str = "config.toml";

#[derive(Debug, Parser)]
#[command(name = "parley", version, about = "A Matrix homeserver")]
pub struct Cli {
    /// Path of the configuration file.
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the homeserver (the default).
    Serve,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage registration tokens (for `registration.mode = "token"`).
    #[command(subcommand, name = "registration-token")]
    RegistrationToken(TokenCommand),
    /// Apply pending database migrations and exit.
    Migrate,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account. Without --password, the password is read from the terminal or stdin.
    Create {
        name: String,
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        admin: bool,
    },
    /// Set a new password: read from the terminal or stdin, or generated and printed with
    /// --random. Every device of the user is logged out.
    ResetPassword {
        name: String,
        #[arg(long)]
        random: bool,
    },
    /// Deactivate an account for good.
    Deactivate { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it; only its hash is stored.
    Create {
        /// How many registrations it allows (unlimited when absent).
        #[arg(long)]
        uses: Option<u32>,
        /// Days until it expires (never when absent).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List tokens by their first characters, with their use counts.
    List,
    /// Delete the token(s) starting with PREFIX (as `list` shows it).
    Delete { prefix: String },
}

impl Cli {
    pub fn load_config(&self) -> anyhow::Result<Config> {
        // The default path may be absent when the environment supplies the settings.
        let is_default = self.config.as_os_str() == DEFAULT_CONFIG;
        Ok(Config::load(&self.config, is_default)?)
    }
}

/// Sets up logging for the binary. Tests never call this: the subscriber is process-global.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.logging.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.logging.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs an administrator's command against the configured database.
pub async fn run_admin(config: Config, command: Command) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let storage = Storage::connect(&config.database.url, 2).await?;
    let result = match command {
        Command::Serve => unreachable!("serve is not an admin command"),
        Command::Migrate => {
            println!("database is up to date");
            Ok(())
        }
        Command::User(user) => {
            let (_shutdown, stop) = tokio::sync::watch::channel(false);
            run_user(Services::build(Arc::clone(&config), storage.clone(), stop).await?, user).await
        }
        Command::RegistrationToken(token) => run_token(&storage, token).await,
    };
    storage.close().await;
    result
}

async fn run_user(services: Arc<Services>, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create { name, password, admin } => {
            let password = match password {
                Some(p) => p,
                None => read_password(&format!("Password for {name}: "))?,
            };
            let user_id = services
                .accounts
                .create(NewAccount {
                    localpart: Some(&name),
                    password: Some(&password),
                    is_admin: admin,
                    registration_token_hash: None,
                })
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("created {user_id}{}", if admin { " (admin)" } else { "" });
        }
        UserCommand::ResetPassword { name, random } => {
            let user_id = existing_user(&services, &name).await?;
            let password = if random { AccountService::random_password() } else { read_password("New password: ")? };
            services.accounts.set_password(&user_id, &password).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            services.devices.revoke_other_tokens(&user_id, None).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            if random {
                println!("new password for {user_id}: {password}");
            } else {
                println!("password of {user_id} changed; its devices are logged out");
            }
        }
        UserCommand::Deactivate { name } => {
            let user_id = existing_user(&services, &name).await?;
            services.accounts.deactivate(&user_id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("deactivated {user_id}");
        }
    }
    Ok(())
}

async fn existing_user(services: &Services, name: &str) -> anyhow::Result<ruma::OwnedUserId> {
    let user_id = services
        .accounts
        .user_id_for(name.trim_start_matches('@').split(':').next().unwrap_or(name))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match services.accounts.get(&user_id).await.map_err(|e| anyhow::anyhow!("{e}"))? {
        Some(user) if !user.deactivated => Ok(user_id),
        Some(_) => bail!("{user_id} is deactivated"),
        None => bail!("no such user: {user_id}"),
    }
}

async fn run_token(storage: &Storage, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { uses, expires_in_days } => {
            let token = secrets::random_base64(18);
            let now = now_ms();
            storage
                .registration
                .create_token(
                    &secrets::sha256(&token),
                    RegistrationToken {
                        prefix: token[..6].to_owned(),
                        uses_allowed: uses.map(i64::from),
                        completed: 0,
                        expiry_ts: expires_in_days.map(|d| now + i64::from(d) * 86_400_000),
                        created_at: now,
                    },
                )
                .await?;
            println!("{token}");
        }
        TokenCommand::List => {
            let now = now_ms();
            for t in storage.registration.list_tokens().await? {
                let uses = t.uses_allowed.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
                let state = if t.is_usable(now) { "usable" } else { "used up or expired" };
                println!("{}…  used {}/{}  {}", t.prefix, t.completed, uses, state);
            }
        }
        TokenCommand::Delete { prefix } => {
            let n = storage.registration.delete_tokens_by_prefix(&prefix).await?;
            println!("deleted {n} token(s)");
        }
    }
    Ok(())
}

/// Reads a password from the terminal without echo, or a line from stdin when piped.
fn read_password(prompt: &str) -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt)?
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        bail!("the password must not be empty");
    }
    std::io::stdout().flush().ok();
    Ok(password)
}
