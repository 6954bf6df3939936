//! `windlass up`: the newcomer's first command. Starts the edge and the server (separate
//! processes, as in production: the edge keeps serving while the server restarts), deploys the
//! platform, prints its URLs and stays in the foreground; Ctrl-C stops everything it started,
//! instances included.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use windlass_runtime::{DockerRuntime, ProcessRuntime, Runtime, Runtimes};
use windlass_server::tokens;

use crate::client::{self, Client, Connection};
use crate::server::StateArgs;
use crate::{Outcome, OutputFormat, UsageError};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    state: StateArgs,
    /// The environment to run [default: staging]
    #[arg(long = "env", default_value = "staging")]
    environment: String,
    /// Where the server's API listens.
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: std::net::SocketAddr,
    /// Read variables from this file instead of the environment's env file.
    #[arg(long)]
    env_file: Option<PathBuf>,
}

/// A child process whose stdout lines arrive on a channel (and are echoed, prefixed).
struct Started {
    child: Child,
    lines: mpsc::Receiver<String>,
    name: &'static str,
}

impl Started {
    fn spawn(name: &'static str, mut command: Command) -> anyhow::Result<Self> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).process_group(0);
        let mut child = command.spawn().map_err(|e| anyhow::anyhow!("cannot start the {name}: {e}"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout from the {name}"))?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("{name} | {line}");
                if sender.send(line).is_err() {
                    // Nobody waits for lines any more; keep echoing.
                }
            }
        });
        Ok(Started { child, lines, name })
    }

    /// Waits for a line starting with `prefix`; the rest of it.
    fn wait_for(&mut self, prefix: &str) -> anyhow::Result<String> {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    anyhow::bail!(
                        "the {} did not report `{prefix}`{}",
                        self.name,
                        status.map(|s| format!(" (it exited: {s})")).unwrap_or_default()
                    );
                }
            }
        }
    }

    fn stop(mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill only sends SIGTERM to our own child, which has not been reaped yet.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let _ = self.child.wait();
    }
}

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    windlass_failpoint::private::write_atomic(path, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let (config, config_path, state_dir) = args.state.resolve()?;
    if !config.environments.contains_key(&args.environment) {
        let declared: Vec<&str> = config.environments.keys().map(String::as_str).collect();
        return Err(UsageError(format!(
            "environment `{}` is not declared in {} (declared: {})",
            args.environment,
            config_path.display(),
            declared.join(", ")
        ))
        .into());
    }
    windlass_failpoint::private::ensure_dir(&state_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", state_dir.display()))?;
    let exe = std::env::current_exe()?;
    let runtime = client::runtime()?;

    // The edge's admin token and the user's API token, reused across runs while valid.
    let edge_token_file = state_dir.join("edge.token");
    if !edge_token_file.exists() {
        write_secret(&edge_token_file, &tokens::generate().map_err(anyhow::Error::msg)?)?;
    }
    let token_file = state_dir.join("token");
    runtime.block_on(async {
        let store = windlass_server::open_store(&state_dir, args.state.database.as_deref()).await?;
        // `up` runs on the server's own machine, with its state: the one place a bootstrap
        // admin token may be made. One that is still live (not revoked or expired) is kept.
        let valid = match std::fs::read_to_string(&token_file) {
            Ok(token) => tokens::authenticate(&*store, token.trim())
                .await
                .map_err(anyhow::Error::msg)?
                .is_ok_and(|token| token.admin),
            Err(_) => false,
        };
        if !valid {
            let request = tokens::TokenRequest {
                name: format!("up-{}", store.now().as_second()),
                owner: local_user(),
                robot: false,
                admin: true,
                lifetime: tokens::DEFAULT_LIFETIME,
            };
            let token = tokens::create(&*store, &request).await.map_err(anyhow::Error::msg)?;
            write_secret(&token_file, &token)?;
        }
        anyhow::Ok(())
    })?;

    let mut edge_command = Command::new(&exe);
    edge_command.arg("edge").arg("--config").arg(&config_path).arg("--env").arg(&args.environment);
    edge_command.arg("--token-file").arg(&edge_token_file);
    edge_command.arg("--state").arg(state_dir.join(format!("edge-{}.json", args.environment)));
    let mut edge = Started::spawn("edge", edge_command)?;
    let edge_listen = edge.wait_for("edge listening on")?;
    let edge_admin = edge.wait_for("admin listening on")?;

    let mut server_command = Command::new(&exe);
    server_command.arg("server").arg("--config").arg(&config_path).arg("--state").arg(&state_dir);
    // The edge serves this one environment's routes: the server manages just that one.
    server_command.arg("--env").arg(&args.environment);
    server_command.arg("--listen").arg(args.listen.to_string());
    server_command.arg("--edge-admin").arg(&edge_admin).arg("--edge-listen").arg(&edge_listen);
    server_command.arg("--edge-token-file").arg(&edge_token_file);
    if let Some(database) = &args.state.database {
        server_command.arg("--database").arg(database);
    }
    if let Some(env_file) = &args.env_file {
        server_command.arg("--env-file").arg(env_file);
    }
    let mut server = match Started::spawn("server", server_command) {
        Ok(server) => server,
        Err(err) => {
            edge.stop();
            return Err(err);
        }
    };
    let outcome = (|| -> anyhow::Result<Outcome> {
        let server_url = server.wait_for("server listening on")?;
        let client = Client::new(&Connection::to(&server_url, &token_file))?;
        let done = runtime.block_on(async {
            let body =
                windlass_api::deploys::DeployRequest { reason: Some("windlass up".into()), ..Default::default() };
            let path = format!("/environments/{}/deploys", args.environment);
            let windlass_api::Started { id } = crate::output::call(&client, "POST", &path, Some(&body)).await?;
            println!("deploy {id} started");
            crate::follow::watch(&client, &id, OutputFormat::Text).await
        })?;
        let outcome = crate::follow::finish(&done, OutputFormat::Text)?;
        if outcome != Outcome::Ok {
            println!("the deploy did not succeed; `windlass up` stops what it started");
            return Ok(outcome);
        }
        let port = edge_listen.rsplit(':').next().unwrap_or("80");
        println!();
        println!("{} is up ({}):", config.project.name, args.environment);
        for name in config.services.keys() {
            let Some(service) = config.service_in(&args.environment, name) else { continue };
            for route in &service.routes {
                let host = route.host.as_deref().unwrap_or("127.0.0.1");
                println!("  {name:<12} http://{host}:{port}{}", route.path);
            }
        }
        println!("  API          {server_url}  (token in {})", token_file.display());
        println!(
            "names under .localhost reach 127.0.0.1: curl http://<name>:{port}/ works; press Ctrl-C to stop everything"
        );
        runtime.block_on(async {
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            anyhow::Ok(())
        })?;
        Ok(outcome)
    })();
    println!("stopping the server, the instances and the edge");
    server.stop();
    let stopped = runtime.block_on(stop_instances(&state_dir));
    edge.stop();
    stopped?;
    outcome
}

async fn stop_instances(state_dir: &Path) -> anyhow::Result<()> {
    let Some(shim) = windlass_runtime::default_shim_program() else { return Ok(()) };
    let process: Arc<dyn Runtime> = Arc::new(ProcessRuntime::new(state_dir.join("instances"), shim));
    let runtime = Runtimes::new(process, Some(DockerRuntime::for_state_dir(state_dir)));
    for instance in runtime.list().await? {
        runtime.stop(&instance.id).await?;
    }
    Ok(())
}

/// The local user's name as a token owner (`$USER`, when it is a valid name), or `admin`.
fn local_user() -> String {
    std::env::var("USER").ok().filter(|user| windlass_config::is_access_name(user)).unwrap_or_else(|| "admin".into())
}
