//! The `tollgate` binary: parse configuration, then call the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use tollgate_server::{
    bootstrap,
    config::{AdminCommand, Cli, Command, Settings},
    domain::names::PrincipalName,
    shutdown, telemetry,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let file = match &cli.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    match cli.command {
        None => serve(cli.serve.or(file)).await,
        Some(Command::Serve(flags)) => serve(flags.or(file)).await,
        Some(Command::Admin {
            command:
                AdminCommand::CreateKey {
                    settings,
                    service_account,
                    display_name,
                },
        }) => {
            let config = settings.or(file).resolve();
            telemetry::init(config.log_format, "warn");
            let owner = PrincipalName::parse_kind(
                "--service-account",
                &service_account,
                tollgate_server::domain::names::PrincipalKind::ServiceAccount,
            )
            .map_err(|v| anyhow::anyhow!("{}: {}", v.field, v.description))?;
            let store = tollgate_server::open_store(&config).await?;
            let key = bootstrap::create_key(&store, &owner, display_name).await?;
            println!("{}", key.expose());
            Ok(())
        }
        Some(Command::Admin {
            command: AdminCommand::RecoverRoot { settings },
        }) => {
            let config = settings.or(file).resolve();
            telemetry::init(config.log_format, "warn");
            let store = tollgate_server::open_store(&config).await?;
            let key = bootstrap::recover_root(&store).await?;
            println!("{}", key.expose());
            Ok(())
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let config = settings.resolve();
    telemetry::init(config.log_format, &config.log_level);
    // A worker-only process serves no API: it takes no API port.
    let listener = if config.roles()?.api {
        Some(
            tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?,
        )
    } else {
        None
    };
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.admin_listen))?;
    let app = tollgate_server::prepare(config).await?;
    tollgate_server::run(app, listener, admin, shutdown_signal()).await
}

/// The shutdown future passed to `run`: [`shutdown::signal`], then a log
/// line, so an operator sees why the server began to drain.
async fn shutdown_signal() {
    shutdown::signal().await;
    tracing::info!("shutdown signal received; draining in-flight calls");
}
