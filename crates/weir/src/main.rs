//! The `weir` command line: `serve`, `check` and `plugin` (in `cli/`).

use std::path::PathBuf;

mod cli;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use weir_server::config::{Config, LogFormat, embedded_default};
use weir_server::gateway::{AppState, Gateway};
use weir_server::reload::Reloader;
use weir_server::server::Server;

#[derive(Parser)]
#[command(name = "weir", version, about = "LLM API gateway with sandboxed WebAssembly plugins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (on the embedded default config unless --config is given).
    Serve {
        /// TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override `server.listen` (an IP address and port, or localhost:<port>).
        #[arg(long, value_parser = weir_server::config::parse_listen)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Validate a config and load what `serve` would (plugins compiled and `init`ed), without
    /// binding sockets; exit non-zero naming the offending key or plugin.
    Check {
        /// TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Develop plugins without a gateway: scaffold a project, inspect a component, run its hooks offline.
    Plugin {
        #[command(subcommand)]
        command: cli::plugin::PluginCommand,
    },
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::load(p).map_err(anyhow::Error::from),
        None => embedded_default().context("embedded default config"),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `weir plugin`: the plugin's own log lines are the point; gateway chatter is not.
    // `weir check`: only what is wrong, not the load's progress.
    let default_filter = match cli.command {
        Command::Plugin { .. } => "weir_plugins=error,weir::plugin=trace,error",
        Command::Check { .. } => "warn",
        Command::Serve { .. } => "weir=info,warn",
    };
    // The config is read before logging starts: `[log] format` decides how lines look.
    let config = match &cli.command {
        Command::Serve { config, .. } | Command::Check { config } => Some(load(config.as_ref())),
        Command::Plugin { .. } => None,
    };
    let format = match &config {
        Some(Ok(cfg)) => cfg.log.format,
        _ => LogFormat::Text,
    };
    init_logging(default_filter, format);
    let result = match (cli.command, config) {
        (_, Some(Err(e))) => Err(e),
        (Command::Check { .. }, Some(Ok(cfg))) => check(cfg),
        (Command::Serve { config, listen }, Some(Ok(cfg))) => serve(cfg, config.as_ref(), listen),
        (Command::Plugin { command }, _) => cli::plugin::run(command),
        (_, None) => unreachable!("serve and check load a config"),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Weir's own log lines on standard error, as text or JSON lines (`[log] format`).
fn init_logging(default_filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).with_span_list(false).init(),
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
}

fn check(cfg: Config) -> anyhow::Result<()> {
    if let Some(w) = cfg.admin.exposure_warning() {
        eprintln!("warning: {w}");
    }
    let (providers, plugins) = (cfg.providers.len(), cfg.plugins.len());
    // The same build `serve` runs (providers, pools, plugins compiled, instantiated and
    // `init`ed with their config), so what passes here also starts; only sockets are skipped.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async { Gateway::build(cfg, None).await.map(drop) }).map_err(anyhow::Error::msg)?;
    println!("config ok: {providers} provider(s), {plugins} plugin(s)");
    Ok(())
}

fn serve(mut cfg: Config, path: Option<&PathBuf>, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    if let Some(addr) = listen {
        cfg.server.listen = addr;
    }
    // The control runtime: startup, reloads, signals, the admin API and the acceptor. Client
    // connections are served on the serving threads `Server::bind` starts.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async move {
        weir_server::metrics::install();
        weir_server::events::describe_metrics();
        let shutdown_timeout = cfg.server.shutdown_timeout;
        let listen = cfg.server.listen;
        let threads = cfg.server.threads;
        let summary = startup_summary(&cfg);
        let admin = cfg.admin.clone();
        if let Some(w) = admin.exposure_warning() {
            tracing::warn!("{w}");
        }
        let gateway = Gateway::build(cfg, None).await.map_err(anyhow::Error::msg)?;
        let state = AppState::new(gateway);
        let reloader = Reloader::new(state.clone(), path.cloned());
        let mut server =
            Server::bind(listen, threads, state).await.with_context(|| format!("cannot listen on {listen}"))?;
        let addr = server.local_addr()?;
        let admin_note = if admin.token.as_deref().is_some_and(|t| !t.is_empty()) {
            let a =
                server.bind_admin(admin.listen).await.with_context(|| format!("cannot listen on {}", admin.listen))?;
            weir_server::admin_live::spawn_sampler(reloader.state().clone());
            format!("admin API and dashboard on http://{a} (/admin/dashboard)")
        } else {
            "admin API off (no admin.token)".to_string()
        };
        reloader.spawn_sighup();
        if admin.watch
            && path.is_some()
            && let Err(e) = weir_server::watch::spawn(reloader.clone())
        {
            tracing::warn!(error = %e, "file watching unavailable; reload with SIGHUP or the admin API");
        }
        tracing::info!("weir listening on http://{addr} ({} threads) {summary} | {admin_note}", server.threads());
        server.serve(reloader.clone(), shutdown_signal(), shutdown_timeout).await;
        // The sinks write out what is still queued (request records of the last requests).
        if let Some(bus) = reloader.state().gateway.load().events.clone() {
            tokio::task::spawn_blocking(move || bus.shutdown(std::time::Duration::from_secs(5))).await.ok();
        }
        tracing::info!("weir stopped");
        Ok(())
    })
}

fn startup_summary(cfg: &Config) -> String {
    let providers: Vec<String> = cfg.providers.iter().map(|p| format!("{}[{}]", p.name, p.models.join(","))).collect();
    let plugins: Vec<&str> = cfg.plugins.iter().map(|p| p.name.as_str()).collect();
    format!(
        "providers: {} | plugins: {}",
        providers.join(" "),
        if plugins.is_empty() { "none".to_string() } else { plugins.join(" -> ") }
    )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
