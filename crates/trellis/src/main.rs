//! `trellis`: the command line. `trellis serve` runs the server; the other commands talk to a
//! running server over HTTP, found through `--endpoint` or `TRELLIS_ENDPOINT`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use trellis::config::{self, Env, ProcessEnv, RawConfig};
use trellis::{app, status};

/// Amazon VPC Lattice, self-hosted.
#[derive(Debug, Parser)]
#[command(name = "trellis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: the AWS APIs on one endpoint, over the embedded store or etcd.
    Serve(ServeArgs),
    /// The ECS + VPC Lattice scenario end to end, on a temporary installation of its own.
    Demo {
        /// Leave it running afterwards (until Ctrl-C).
        #[arg(long)]
        keep: bool,
        /// netns or loopback [default: netns as root on Linux, else loopback].
        #[arg(long)]
        network: Option<String>,
        /// An HTTPS:443 listener instead of HTTP:80, fetched over TLS trusting the Trellis CA.
        #[arg(long)]
        https: bool,
        /// The service's authType AWS_IAM, with an auth policy that lets in VPC-B only (VPC-A
        /// is turned away).
        #[arg(long)]
        auth: bool,
    },
    /// Show service networks, services (with DNS names), target groups and targets; with
    /// --nodes, the live nodes sharing the store instead (roles, served revision, lag).
    Status {
        /// List the nodes.
        #[arg(long)]
        nodes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the installation's certificate authority (PEM): what HTTPS clients trust
    /// (`curl --cacert`, `AWS_CA_BUNDLE`, `update-ca-certificates`).
    Ca(ClientArgs),
    /// Print the account's root access key as shell variables (`eval "$(trellis credentials)"`):
    /// what the aws CLI and SDKs sign requests with.
    Credentials(ClientArgs),
    /// VPCs: `trellis vpc ingress VPC_ID`, `trellis vpc exec VPC_ID -- CMD…`.
    #[command(subcommand)]
    Vpc(VpcCommand),
    /// This installation's networks (netns mode): `trellis net cleanup`.
    #[command(subcommand)]
    Net(NetCommand),
    /// Output of ECS tasks (`trellis logs task TASK_ID`) and this node's access logs
    /// (`trellis logs access [--service ID] [--follow]`).
    #[command(subcommand)]
    Logs(LogsCommand),
    /// Run a built-in image (what a task whose image is `amazon/amazon-ecs-sample` or
    /// `trellis/echo` runs): `sample` or `echo`, on $HOST:$PORT.
    #[command(hide = true)]
    Image {
        /// `sample` or `echo`.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum LogsCommand {
    /// Print the newest access log entries this node wrote (one JSON object a line, oldest
    /// first), all destinations merged.
    Access {
        /// Only this service's (`svc-…`).
        #[arg(long)]
        service: Option<String>,
        /// How many [default: 100].
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Keep printing new entries as they are written (until interrupted).
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print what a task's containers wrote (its ID or ARN).
    Task {
        /// The task.
        task_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
enum NetCommand {
    /// Remove every network namespace this installation made (and nothing of another's).
    Cleanup(ServeArgs),
}

#[derive(Debug, Subcommand)]
enum VpcCommand {
    /// Print the address clients in the VPC reach Lattice at (loopback mode).
    Ingress {
        /// The VPC.
        vpc_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a command as an instance in the VPC (netns mode, as root): its own network on a
    /// subnet, resolving names through the VPC's DNS. Exits with the command's status.
    Exec {
        /// The VPC.
        vpc_id: String,
        /// The subnet [default: the VPC's first].
        #[arg(long)]
        subnet: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// A TOML configuration file (flags and TRELLIS_* variables override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory [default: $XDG_DATA_HOME/trellis, else ~/.local/share/trellis].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the API [default: 127.0.0.1:7700].
    #[arg(long)]
    listen: Option<String>,
    /// Region of unsigned requests [default: us-east-1].
    #[arg(long)]
    region: Option<String>,
    /// The account every caller acts in [default: 000000000000].
    #[arg(long)]
    account: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long)]
    log_format: Option<String>,
    /// The store: etcd://HOST:PORT[,HOST:PORT…] (etcds:// for TLS) [default: the embedded
    /// store in the data directory].
    #[arg(long)]
    store: Option<String>,
    /// How VPCs are made real: netns (each VPC a network namespace) or loopback (ingress
    /// addresses on loopback) [default: netns as root on Linux, else loopback].
    #[arg(long)]
    network: Option<String>,
    /// Every AWS API call must be signed (SigV4) by an identity of the account, and Trellis's
    /// own endpoints (health aside) need the API token that `trellis credentials` prints.
    #[arg(long)]
    require_signature: bool,
    /// Also serve /_trellis/metrics on this address, on a listener of its own [default: the
    /// API listener only].
    #[arg(long)]
    metrics_listen: Option<String>,
    /// What this node runs over a shared store: all, or some of api, proxy, tasks
    /// (comma-separated) [default: all].
    #[arg(long)]
    role: Option<String>,
    /// This node's name, unique among the nodes sharing a store [default: the host name].
    #[arg(long)]
    node: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// The server [default: $TRELLIS_ENDPOINT, else http://127.0.0.1:7700].
    #[arg(long)]
    endpoint: Option<String>,
    /// The API token, for a server run with --require-signature [default: $TRELLIS_TOKEN, else,
    /// for a server on this machine, the file api-token in the data directory, if readable].
    /// Prefer TRELLIS_TOKEN: a flag's value is visible to other users in the process list.
    #[arg(long)]
    token: Option<String>,
    /// The server's data directory, where its API token is [default: $TRELLIS_DATA_DIR, else
    /// $XDG_DATA_HOME/trellis, else ~/.local/share/trellis].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            // Handled here, so reported here: one line with the causes, no backtrace.
            eprintln!("trellis: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a command; its exit status.
fn run(cli: Cli) -> anyhow::Result<u8> {
    let runtime = |threads: Option<usize>| {
        // One worker: a current-thread runtime does the same work without the multi-threaded
        // scheduler's cross-thread bookkeeping (blocking work still has its own pool).
        let mut builder = match threads {
            Some(1) => tokio::runtime::Builder::new_current_thread(),
            Some(n) => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n);
                b
            }
            None => tokio::runtime::Builder::new_multi_thread(),
        };
        builder.enable_all().build().context("starting the runtime")
    };
    match cli.command {
        Command::Serve(args) => {
            let config = serve_config(args, &ProcessEnv)?;
            init_logs(config.log_json);
            trellis::memory::limit_arenas();
            runtime(config.worker_threads)?.block_on(async move {
                let shutdown = shutdown_signal();
                let bound = app::build(config).await?;
                bound.wait_termination(shutdown).await
            })?;
            Ok(0)
        }
        Command::Demo { keep, network, https, auth } => {
            init_logs_with(false, "warn");
            let options = trellis::demo::Options { https, auth };
            runtime(None)?.block_on(trellis::demo::run(keep, network, options))?;
            Ok(0)
        }
        Command::Status { nodes, client: args } => {
            let client = client(args, &ProcessEnv)?;
            if nodes {
                runtime(Some(1))?.block_on(status::nodes(&client))?;
            } else {
                runtime(Some(1))?.block_on(status::run(&client))?;
            }
            Ok(0)
        }
        Command::Ca(args) => {
            let client = client(args, &ProcessEnv)?;
            runtime(Some(1))?.block_on(async {
                let pem = client.text("GET", "/_trellis/ca").await?;
                print!("{pem}");
                anyhow::Ok(())
            })?;
            Ok(0)
        }
        Command::Credentials(args) => {
            let client = client(args, &ProcessEnv)?;
            runtime(Some(1))?.block_on(async {
                let key = client.call("GET", "/_trellis/credentials", None).await?;
                let field = |name: &str| {
                    key[name].as_str().map(str::to_owned).with_context(|| format!("the server's answer lacks {name}"))
                };
                println!("export AWS_ACCESS_KEY_ID={}", field("accessKeyId")?);
                println!("export AWS_SECRET_ACCESS_KEY={}", field("secretAccessKey")?);
                println!("export TRELLIS_TOKEN={}", field("token")?);
                println!("# {} (account {})", field("arn")?, field("account")?);
                anyhow::Ok(())
            })?;
            Ok(0)
        }
        Command::Vpc(VpcCommand::Ingress { vpc_id, client: args }) => {
            let client = client(args, &ProcessEnv)?;
            runtime(Some(1))?.block_on(trellis::vpc::ingress(&client, &vpc_id))?;
            Ok(0)
        }
        Command::Vpc(VpcCommand::Exec { vpc_id, subnet, client: args, command }) => {
            let client = client(args, &ProcessEnv)?;
            runtime(Some(1))?.block_on(trellis::vpc::exec(&client, &vpc_id, subnet.as_deref(), &command))
        }
        Command::Logs(LogsCommand::Access { service, limit, follow, client: args }) => {
            let client = client(args, &ProcessEnv)?;
            let options = trellis::access_logs::Options { service, limit, follow };
            runtime(Some(1))?.block_on(trellis::access_logs::print(&client, options))?;
            Ok(0)
        }
        Command::Logs(LogsCommand::Task { task_id, client: args }) => {
            let client = client(args, &ProcessEnv)?;
            runtime(Some(1))?.block_on(trellis::logs::print(&client, &task_id))?;
            Ok(0)
        }
        Command::Image { name } => {
            let image = trellis_tasks::images::Image::from_cli_name(&name)
                .with_context(|| format!("no built-in image {name:?} (sample, echo)"))?;
            runtime(Some(1))?.block_on(trellis_tasks::images::serve(image))?;
            Ok(0)
        }
        Command::Net(NetCommand::Cleanup(args)) => {
            let config = serve_config(args, &ProcessEnv)?;
            trellis::net::cleanup(&config)?;
            Ok(0)
        }
    }
}

fn serve_config(args: ServeArgs, env: &dyn Env) -> anyhow::Result<config::Config> {
    let mut raw = match &args.config {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    raw.apply_env(env)?;
    raw.data_dir = args.data_dir.or(raw.data_dir);
    raw.listen = args.listen.or(raw.listen);
    raw.region = args.region.or(raw.region);
    raw.account = args.account.or(raw.account);
    raw.log_format = args.log_format.or(raw.log_format);
    raw.store = args.store.or(raw.store);
    raw.network = args.network.or(raw.network);
    if args.require_signature {
        raw.require_signature = Some(true);
    }
    raw.metrics_listen = args.metrics_listen.or(raw.metrics_listen);
    raw.role = args.role.or(raw.role);
    raw.node = args.node.or(raw.node);
    raw.validate(env)
}

/// A client of the server the flags and the environment name, with the API token if one is
/// given or can be read from the data directory.
fn client(args: ClientArgs, env: &dyn Env) -> anyhow::Result<trellis::client::Client> {
    let endpoint = endpoint(args.endpoint, env);
    // The token file is this machine's installation's: it goes to a server on this machine
    // only, never in the clear to another host the endpoint names.
    let local = trellis::client::is_local(&endpoint);
    let token = args.token.or_else(|| env.var("TRELLIS_TOKEN")).filter(|t| !t.is_empty()).or_else(|| {
        if !local {
            return None;
        }
        let dir = args.data_dir.or_else(|| env.var("TRELLIS_DATA_DIR").filter(|d| !d.is_empty()).map(PathBuf::from));
        let dir = dir.or_else(|| config::default_data_dir(env).ok())?;
        let text = std::fs::read_to_string(dir.join(trellis::app::TOKEN_FILE)).ok()?;
        Some(text.trim().to_owned()).filter(|t| !t.is_empty())
    });
    Ok(trellis::client::Client::new(&endpoint)?.with_token(token))
}

fn endpoint(flag: Option<String>, env: &dyn Env) -> String {
    flag.or_else(|| env.var("TRELLIS_ENDPOINT").filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "http://127.0.0.1:7700".to_owned())
}

fn init_logs(json: bool) {
    init_logs_with(json, "info");
}

/// Logs to stderr at `TRELLIS_LOG`, else `default`.
fn init_logs_with(json: bool, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TRELLIS_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called, not when it
/// is first polled: called before the API binds, a signal sent as soon as its port accepts
/// (before the server gets to waiting) still shuts it down cleanly.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let watched = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        match watched {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("shutting down");
    }
}
