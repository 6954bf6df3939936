//! A platform under test: a real `windlass edge` and `windlass server` on ports of their own, a
//! token, and the CLI run against them. Instances are real processes under real shims.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use windlass_testkit::process::Process;
use windlass_testkit::{TempDir, workspace_bin};

use crate::harness::{Run, repo_root};

pub const EDGE_TOKEN: &str = "test-edge-admin-token-0123456789";

pub struct Platform {
    pub dir: TempDir,
    pub config: PathBuf,
    pub environment: String,
    /// Held so the edge runs as long as the platform (killed on drop).
    _edge: Process,
    pub edge_address: SocketAddr,
    pub edge_admin: SocketAddr,
    pub server: Option<Process>,
    pub server_url: String,
    pub token: String,
    /// A store shared with other platforms (a PostgreSQL URL); none: SQLite in the state dir.
    pub database: Option<String>,
}

/// The demo service's binary, as a `run` command.
pub fn demo() -> String {
    workspace_bin("windlass-demo").display().to_string()
}

/// A small platform: `api` (blue-green, VERSION from the config), with a smoke check through
/// the edge. `api_env` and `extra` are spliced into the config.
pub fn config(api_run: &str, api_env: &str, keep_warm: &str, extra: &str) -> String {
    format!(
        r#"[project]
name = "shop"

[environments.production]

[pipeline]
phases = ["validate", "backend", "verification", "traffic"]

[services.api]
phase = "backend"
run = "{api_run}"
instances = 2
strategy = "blue-green"
keep_warm = "{keep_warm}"
route = {{ host = "api.shop.localhost", path = "/" }}
health = {{ path = "/health", interval = "100ms", timeout = "1s", healthy_after = 1, start_timeout = "20s" }}
env = {{ {api_env} }}

[[smoke]]
name = "api answers"
url = "http://api.shop.localhost/version"
service = "api"
expect = {{ status = 200, body_contains = "\"version\"" }}

[edge]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{extra}
"#
    )
}

impl Platform {
    /// The platform of `config_text` (written as windlass.toml in a fresh directory).
    pub fn start(config_text: &str) -> Self {
        let dir = windlass_testkit::tempdir();
        let config = dir.path().join("windlass.toml");
        std::fs::write(&config, config_text).unwrap();
        Self::start_in(dir, config, "production", None, "alice")
    }

    /// A platform for `environment` whose server shares the store at `database` with other
    /// platforms (the team setup: one server per environment, one PostgreSQL); its CLI runs as
    /// `user`.
    pub fn start_shared(config_text: &str, environment: &str, database: &str, user: &str) -> Self {
        let dir = windlass_testkit::tempdir();
        let config = dir.path().join("windlass.toml");
        std::fs::write(&config, config_text).unwrap();
        Self::start_in(dir, config, environment, Some(database.to_owned()), user)
    }

    /// The Maily example, copied, running `environment`.
    pub fn maily(environment: &str) -> Self {
        let dir = windlass_testkit::tempdir();
        crate::harness::copy_dir(&repo_root().join("examples/maily"), dir.path());
        let config = dir.path().join("windlass.toml");
        Self::start_in(dir, config, environment, None, "alice")
    }

    fn start_in(dir: TempDir, config: PathBuf, environment: &str, database: Option<String>, user: &str) -> Self {
        let mut edge = Command::new(workspace_bin("windlass"));
        edge.args(["edge", "--env", environment, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--config")
            .arg(&config)
            .arg("--state")
            .arg(dir.path().join("edge.json"))
            .env("WINDLASS_EDGE_TOKEN", EDGE_TOKEN);
        let edge = Process::start(edge);
        let edge_address = edge.wait_for_address("edge listening on ");
        let edge_admin = edge.wait_for_address("admin listening on ");
        let state = dir.path().join("state");
        let mut create = Command::new(workspace_bin("windlass"));
        create
            .args(["token", "create", "--admin", "--for", user])
            .arg("--config")
            .arg(&config)
            .arg("--state")
            .arg(&state);
        if let Some(database) = &database {
            create.env("WINDLASS_DATABASE", database);
        }
        let created = create.output().unwrap();
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
        let mut platform = Platform {
            dir,
            config,
            environment: environment.into(),
            _edge: edge,
            edge_address,
            edge_admin,
            server: None,
            server_url: String::new(),
            token,
            database,
        };
        platform.start_server(&[]);
        platform
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts the server (again); `env` adds variables such as WINDLASS_FAILPOINTS. Returns the
    /// lines it printed before it announced its address (what recovery found).
    pub fn start_server(&mut self, env: &[(&str, &str)]) -> Vec<String> {
        let mut server = Command::new(workspace_bin("windlass"));
        server
            .args(["server", "--listen", "127.0.0.1:0"])
            .arg("--config")
            .arg(&self.config)
            .arg("--state")
            .arg(self.state_dir())
            .arg("--edge-admin")
            .arg(self.edge_admin.to_string())
            .arg("--edge-listen")
            .arg(self.edge_address.to_string())
            .env("WINDLASS_EDGE_TOKEN", EDGE_TOKEN);
        if let Some(database) = &self.database {
            // One server per environment on the shared store.
            server.env("WINDLASS_DATABASE", database).args(["--env", &self.environment]);
        }
        for (name, value) in env {
            server.env(name, value);
        }
        let server = Process::start(server);
        let mut recovered = Vec::new();
        loop {
            let line = server.wait_for_line("");
            if let Some(url) = line.strip_prefix("server listening on ") {
                self.server_url = url.to_owned();
                break;
            }
            recovered.push(line);
        }
        self.server = Some(server);
        recovered
    }

    /// kill -9 of the server.
    pub fn kill_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.signal(9);
            server.wait();
        }
    }

    /// Runs the CLI against this platform's server with Alice's token.
    pub fn cli(&self, args: &[&str]) -> Run {
        self.cli_as(&self.token, args)
    }

    /// The CLI without a server (offline commands such as `db` and `secrets`), in this
    /// platform's directory.
    pub fn cli_offline(&self, args: &[&str]) -> Run {
        let output = Command::new(workspace_bin("windlass")).args(args).current_dir(self.dir.path()).output().unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `windlass token <args>` on this platform's state (tokens of people and robots of its
    /// `[access]`, or admins).
    pub fn token_command(&self, args: &[&str]) -> Run {
        let mut command = Command::new(workspace_bin("windlass"));
        command.arg("token").args(args).arg("--config").arg(&self.config).arg("--state").arg(self.state_dir());
        if let Some(database) = &self.database {
            command.env("WINDLASS_DATABASE", database);
        }
        let output = command.output().unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// A new token made by `windlass token create <args>`, which must succeed.
    pub fn token_for(&self, args: &[&str]) -> String {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        let run = self.token_command(&all);
        assert_eq!(run.code, 0, "token create {args:?}: {}", run.stderr);
        run.stdout.trim().to_owned()
    }

    /// A bootstrap admin token for another user of this platform (every permission: tests of
    /// roles make their people with [`Platform::token_for`]).
    pub fn add_user(&self, name: &str) -> String {
        let mut create = Command::new(workspace_bin("windlass"));
        create.args(["token", "create", "--admin", "--for", name]).arg("--config").arg(&self.config);
        create.arg("--state").arg(self.state_dir());
        if let Some(database) = &self.database {
            create.env("WINDLASS_DATABASE", database);
        }
        let created = create.output().unwrap();
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        String::from_utf8(created.stdout).unwrap().trim().to_owned()
    }

    /// The CLI as it would run with `token`, not started yet.
    pub fn command_as(&self, token: &str, args: &[&str]) -> Command {
        let mut command = Command::new(workspace_bin("windlass"));
        command
            .args(args)
            .arg("--server")
            .arg(&self.server_url)
            .env("WINDLASS_TOKEN", token)
            .current_dir(self.dir.path());
        command
    }

    /// Runs the CLI against this platform's server with `token`.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Run {
        let output = self.command_as(token, args).output().unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `windlass deploy <env> args...`, which must succeed; returns the deploy's id.
    pub fn deploy(&self, args: &[&str]) -> String {
        let mut all = vec!["deploy", self.environment.as_str()];
        all.extend_from_slice(args);
        let run = self.cli(&all);
        assert_eq!(run.code, 0, "deploy failed:\n{}{}", run.stdout, run.stderr);
        deploy_id(&run)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let run = self.cli(&all);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
    }

    pub fn status(&self) -> Value {
        self.json(&["status"])["environments"][&self.environment].clone()
    }

    /// GET through the edge with a Host header.
    pub async fn get(&self, host: &str, path: &str) -> windlass_testkit::http::Reply {
        windlass_testkit::http::request("GET", self.edge_address, path, &[("host", host)], "").await.unwrap()
    }

    pub fn rewrite_config(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Stops every instance this platform's runtime runs (the shims outlive the server).
    pub fn stop_instances(&self) {
        let root = self.state_dir().join("instances");
        on_own_thread(move || async move {
            use windlass_runtime::Runtime as _;
            let runtime = windlass_runtime::ProcessRuntime::new(root, workspace_bin("windlass-shim"));
            for instance in runtime.list().await.unwrap_or_default() {
                let _ = runtime.stop(&instance.id).await;
            }
        });
    }

    /// How many instances are alive in this platform's runtime.
    pub fn alive_instances(&self) -> usize {
        let root = self.state_dir().join("instances");
        on_own_thread(move || async move {
            use windlass_runtime::Runtime as _;
            let runtime = windlass_runtime::ProcessRuntime::new(root, workspace_bin("windlass-shim"));
            let all = runtime.list().await.unwrap_or_default();
            all.iter().filter(|i| windlass_pipeline::rollout::is_alive(i.state)).count()
        })
    }
}

/// Runs async work on a thread and runtime of its own, so that it can be called from async
/// tests and from `Drop` alike.
fn on_own_thread<T, F, Fut>(work: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(work())
    })
    .join()
    .unwrap()
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.kill_server();
        self.stop_instances();
    }
}

/// The id in `deploy <id> started`.
pub fn deploy_id(run: &Run) -> String {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("deploy ").and_then(|r| r.strip_suffix(" started")))
        .unwrap_or_else(|| panic!("no deploy id in:\n{}", run.stdout))
        .to_owned()
}

pub fn body_json(reply: &windlass_testkit::http::Reply) -> Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.body))
}
