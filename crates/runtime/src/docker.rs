//! The docker runtime: each instance is a container on the host's Docker Engine, driven through
//! the Engine API over its unix socket (API 1.41, Docker Engine 20.10 and newer).
//!
//! # Images
//!
//! An instance's program must be a static executable. It is put alone into an image
//! `FROM scratch` (a build context of a Dockerfile and the binary, written here as a ustar
//! archive), tagged `windlass/<service>:<first 12 hex digits of its SHA-256>` and labelled
//! `windlass.sha256` (the whole hash) and `windlass.service`. An image whose label matches is
//! reused, so each build is made once. A dynamically linked executable (one with a `PT_INTERP`
//! program header) is refused before anything is built: the image has no loader and no libc.
//!
//! # Containers
//!
//! One per instance, named `windlass-<scope>-<id>`. The scope (see
//! [`DockerRuntime::for_state_dir`]) keeps servers with different state directories on one
//! daemon apart. The container carries the spec's labels as they are, plus `windlass.instance`
//! (the id), `windlass.scope` and `windlass.addresses` (its sockets' addresses, JSON); `list`
//! and `get` read everything back from the daemon, so a restarted server finds its containers
//! (they outlive it) and a second start of a running id is refused.
//!
//! Networking is the host's: the runtime picks a free port on `listen_host` for each socket and
//! passes it as `PORT` (the first socket) and `<NAME>_PORT` (each socket, e.g. `ADMIN_PORT`),
//! with `HOST` = `listen_host` unless the spec sets it; the service must bind there. A port taken
//! between the pick and the bind shows as "address already in use" in the container's output:
//! the container is replaced with new ports (up to three times).
//!
//! The container runs as `nobody` (65534) in `/` (the spec's `working_dir` is a host path and
//! is not used), with the spec's environment only and the spec's `args` as its command. Docker restarts it
//! when it fails (restart policy `on-failure` with `restart.max_restarts` as its limit and
//! Docker's own doubling back-off); past the limit the container stays exited and the instance
//! is reported [`InstanceState::CrashLoop`]. [`Runtime::stop`] first sets the restart policy to
//! `no` (which is also how a stopped container is told apart from a crashed one), then stops with
//! SIGTERM, the spec's `stop_grace`, then SIGKILL. Output goes to Docker's `json-file` log,
//! rotated by the spec's [`crate::LogPolicy`]; [`Runtime::logs`] reads it back through the API.
//!
//! | container | instance |
//! |---|---|
//! | `created` | `starting`; `exited` when Docker could not start it; `stopped` after [`Runtime::stop`] |
//! | `running` | `running` |
//! | `restarting` | `backing_off` |
//! | `exited`, `dead` | `stopped` after [`Runtime::stop`]; `exited` when the program ended with 0; `crash_loop` otherwise |

mod api;
mod image;
mod logs;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use image::STATIC_HINT;

use crate::spec::{ExitInfo, Instance, InstanceSpec, InstanceState, validate_id};
use crate::{Runtime, RuntimeError};
use api::{Answer, Client, encode};

/// Where the Docker Engine listens by default.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// The label naming a container's instance id.
pub const INSTANCE_LABEL: &str = "windlass.instance";
/// The label naming a container's scope.
pub const SCOPE_LABEL: &str = "windlass.scope";
/// The label on images naming the service they were built for.
pub const SERVICE_LABEL: &str = "windlass.service";
const ADDRESSES_LABEL: &str = "windlass.addresses";
const SHA_LABEL: &str = "windlass.sha256";

/// Plain API calls (inspect, create, start, list...).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A build of one small image.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a started container may take to run (or to show that it cannot).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `start` waits for the first socket to accept connections before handing the
/// instance to the health gate anyway.
const LISTEN_WAIT: Duration = Duration::from_secs(10);
/// How long past the stop grace the daemon may take to stop a container.
const STOP_SLACK: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// How often a container whose port was taken is replaced with new ports.
const BIND_ATTEMPTS: usize = 3;
/// How many handed-out ports are remembered.
const RECENT_PORTS: usize = 1024;
/// The user the containers run as: `nobody`.
const CONTAINER_USER: &str = "65534:65534";

/// What went wrong talking to the Docker Engine.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker Engine at {}: {source}. Is Docker running? The daemon listens on this \
         socket (start it with `systemctl start docker`), and this user must be allowed to use it \
         (root, or a member of the `docker` group)",
        socket.display()
    )]
    Unreachable { socket: PathBuf, source: std::io::Error },
    #[error("Docker Engine: cannot {action}: {source}")]
    Http { action: String, source: hyper::Error },
    #[error("Docker Engine refused to {action}: {message} (HTTP {status})")]
    Api { action: String, status: u16, message: String },
    #[error("Docker Engine: cannot {action}: {reason}")]
    BadAnswer { action: String, reason: String },
    #[error("Docker Engine: cannot {action} within {timeout:?}")]
    Timeout { action: String, timeout: Duration },
    #[error("cannot build the image {image}: {message}")]
    Build { image: String, message: String },
    #[error("invalid docker scope {scope:?}: only 1 to 32 of a-z, 0-9 and '-' are allowed")]
    InvalidScope { scope: String },
}

impl DockerError {
    /// Whether the daemon cannot be reached at all (no socket, nobody listening on it, or no
    /// permission to use it): then no container of this runtime can run either.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DockerError::Unreachable { .. })
    }
}

/// An image built for an executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `windlass/<service>:<sha256 prefix>`.
    pub tag: String,
    /// `sha256:...`.
    pub id: String,
    /// Whether this call built it (`false`: it was there already).
    pub built: bool,
}

/// Runs instances as containers of the local Docker Engine. Connects at each call (nothing is
/// held open), so creating one needs no daemon. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    scope: String,
    /// Builds run one at a time, so instances started together build their image once.
    builds: tokio::sync::Mutex<()>,
    /// The ports handed out last, never handed out again soon: two instances started together
    /// must not both be told to bind one port.
    recent_ports: std::sync::Mutex<VecDeque<u16>>,
}

impl DockerRuntime {
    /// A runtime on the default socket whose containers carry `scope` (`[a-z0-9-]{1,32}`).
    pub fn new(scope: &str) -> Result<Self, DockerError> {
        Self::with_socket(PathBuf::from(DEFAULT_SOCKET), scope)
    }

    pub fn with_socket(socket: PathBuf, scope: &str) -> Result<Self, DockerError> {
        let valid = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
        if scope.is_empty() || scope.len() > 32 || !scope.bytes().all(valid) {
            return Err(DockerError::InvalidScope { scope: scope.to_owned() });
        }
        Ok(DockerRuntime {
            inner: Arc::new(Inner {
                client: Client::new(socket),
                scope: scope.to_owned(),
                builds: tokio::sync::Mutex::new(()),
                recent_ports: std::sync::Mutex::new(VecDeque::new()),
            }),
        })
    }

    /// The runtime of a server with this state directory: its scope is the first 12 hex digits
    /// of the SHA-256 of the directory's absolute path, so a restarted server finds its
    /// containers and another server's are not its own.
    pub fn for_state_dir(state_dir: &Path) -> Self {
        let path = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_owned());
        let hash = hex::encode(Sha256::digest(path.as_os_str().as_encoded_bytes()));
        let scope = &hash[..12];
        DockerRuntime {
            inner: Arc::new(Inner {
                client: Client::new(PathBuf::from(DEFAULT_SOCKET)),
                scope: scope.to_owned(),
                builds: tokio::sync::Mutex::new(()),
                recent_ports: std::sync::Mutex::new(VecDeque::new()),
            }),
        }
    }

    pub fn scope(&self) -> &str {
        &self.inner.scope
    }

    pub fn socket(&self) -> &Path {
        self.inner.client.socket()
    }

    /// The container's name for an instance id.
    pub fn container_name(&self, id: &str) -> String {
        format!("windlass-{}-{id}", self.inner.scope)
    }

    /// Checks that the daemon answers.
    pub async fn ping(&self) -> Result<(), DockerError> {
        self.call(Method::GET, "/_ping", None, "answer a ping").await?.ok("answer a ping")?;
        Ok(())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
        action: &str,
    ) -> Result<Answer, DockerError> {
        self.inner.client.call(method, path, body, action, CALL_TIMEOUT).await
    }

    /// The image for the static executable `program` (built if it is not there yet), tagged for
    /// `service`.
    pub async fn image_for(&self, service: Option<&str>, program: &Path) -> Result<Image, RuntimeError> {
        let executable = read_executable("image", program).await?;
        self.ensure_image(service, &executable).await
    }

    async fn ensure_image(&self, service: Option<&str>, executable: &Executable) -> Result<Image, RuntimeError> {
        let tag = format!("{}:{}", image::repository(service), &executable.sha256[..12]);
        let _one_build_at_a_time = self.inner.builds.lock().await;
        if let Some(id) = self.image_with_hash(&tag, &executable.sha256).await? {
            tracing::debug!(image = tag, id, "reusing the image");
            return Ok(Image { tag, id, built: false });
        }
        let labels = json!({ SHA_LABEL: executable.sha256, SERVICE_LABEL: service.unwrap_or("") }).to_string();
        let path = format!("/build?t={}&labels={}&rm=1&forcerm=1&pull=0&q=0", encode(&tag), encode(&labels));
        let context = Bytes::from(image::context(&executable.bytes));
        let action = format!("build the image {tag}");
        tracing::info!(image = tag, program = %executable.path.display(), "building an image");
        let answer = self
            .inner
            .client
            .call(Method::POST, &path, Some(("application/x-tar", context)), &action, BUILD_TIMEOUT)
            .await?
            .ok(&action)?;
        image::build_outcome(&answer.body)
            .map_err(|failed| DockerError::Build { image: tag.clone(), message: failed.0 })?;
        let id = self.image_with_hash(&tag, &executable.sha256).await?.ok_or_else(|| DockerError::Build {
            image: tag.clone(),
            message: "the build reported success, but the image is not there".into(),
        })?;
        tracing::info!(image = tag, id, "built the image");
        Ok(Image { tag, id, built: true })
    }

    /// The id of the image `tag` if it holds the executable with this hash.
    async fn image_with_hash(&self, tag: &str, sha256: &str) -> Result<Option<String>, DockerError> {
        let action = format!("inspect the image {tag}");
        let answer = self.call(Method::GET, &format!("/images/{}/json", encode(tag)), None, &action).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let value = answer.ok(&action)?.json(&action)?;
        let hash = value.pointer("/Config/Labels").and_then(|labels| labels.get(SHA_LABEL)).and_then(Value::as_str);
        if hash != Some(sha256) {
            return Ok(None);
        }
        Ok(value.get("Id").and_then(Value::as_str).map(str::to_owned))
    }

    /// Removes the images built for `service` that no container uses; returns how many.
    pub async fn remove_images(&self, service: &str) -> Result<usize, RuntimeError> {
        let filters = json!({ "label": [format!("{SERVICE_LABEL}={service}")] }).to_string();
        let action = format!("list the images of {service}");
        let answer =
            self.call(Method::GET, &format!("/images/json?filters={}", encode(&filters)), None, &action).await?;
        let images = answer.ok(&action)?.json(&action)?;
        let mut removed = 0;
        for id in images.as_array().into_iter().flatten().filter_map(|image| image.get("Id").and_then(Value::as_str)) {
            let action = format!("remove the image {id}");
            let answer = self.call(Method::DELETE, &format!("/images/{}?force=1", encode(id)), None, &action).await?;
            match answer.status {
                status if status.is_success() => removed += 1,
                StatusCode::NOT_FOUND => {}
                StatusCode::CONFLICT => {
                    tracing::info!(image = id, "not removing an image in use: {}", answer.message())
                }
                _ => return Err(answer.refused(&action).into()),
            }
        }
        Ok(removed)
    }

    /// Removes every container of this scope at once (SIGKILL, no grace): for tearing down a
    /// whole platform or a test. Returns how many were removed.
    pub async fn purge(&self) -> Result<usize, RuntimeError> {
        let mut removed = 0;
        for id in self.container_ids().await? {
            self.delete_container(&id).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// The instance ids of this scope's containers, as the daemon lists them.
    async fn container_ids(&self) -> Result<Vec<String>, RuntimeError> {
        let filters = json!({ "label": [format!("{SCOPE_LABEL}={}", self.inner.scope)] }).to_string();
        let action = "list the containers";
        let answer = self
            .call(Method::GET, &format!("/containers/json?all=1&filters={}", encode(&filters)), None, action)
            .await?;
        let containers = answer.ok(action)?.json(action)?;
        Ok(containers
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|container| container.pointer("/Labels").and_then(|l| l.get(INSTANCE_LABEL)))
            .filter_map(Value::as_str)
            .filter(|id| validate_id(id).is_ok())
            .map(str::to_owned)
            .collect())
    }

    /// The container of `id` as an instance, `None` when there is none.
    async fn inspect(&self, id: &str) -> Result<Option<Instance>, RuntimeError> {
        let name = self.container_name(id);
        let action = format!("inspect the container {name}");
        let answer = self.call(Method::GET, &format!("/containers/{name}/json"), None, &action).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let value = answer.ok(&action)?.json(&action)?;
        // A container of this name made by something else is not ours to report.
        let labels = value.pointer("/Config/Labels");
        let ours =
            |key: &str, expected: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str) == Some(expected);
        if !ours(INSTANCE_LABEL, id) || !ours(SCOPE_LABEL, &self.inner.scope) {
            return Ok(None);
        }
        Ok(Some(instance_from(id, &value)))
    }

    async fn delete_container(&self, id: &str) -> Result<(), RuntimeError> {
        let name = self.container_name(id);
        let action = format!("remove the container {name}");
        let answer = self.call(Method::DELETE, &format!("/containers/{name}?force=1&v=1"), None, &action).await?;
        match answer.status {
            status if status.is_success() || status == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(answer.refused(&action).into()),
        }
    }

    async fn create(
        &self,
        spec: &InstanceSpec,
        image: &Image,
        sha256: &str,
        addresses: &BTreeMap<String, SocketAddr>,
    ) -> Result<(), RuntimeError> {
        let name = self.container_name(&spec.id);
        let mut env = spec.env.clone();
        for (index, (socket, address)) in spec.sockets.iter().filter_map(|s| Some((s, addresses.get(s)?))).enumerate() {
            if index == 0 {
                env.insert("PORT".into(), address.port().to_string());
            }
            let upper: String =
                socket.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
            env.insert(format!("{upper}_PORT"), address.port().to_string());
        }
        env.entry("HOST".into()).or_insert_with(|| spec.listen_host.to_string());
        let mut labels: BTreeMap<String, String> = spec
            .labels
            .iter()
            .filter(|(key, _)| !key.starts_with("windlass."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(INSTANCE_LABEL.into(), spec.id.clone());
        labels.insert(SCOPE_LABEL.into(), self.inner.scope.clone());
        labels.insert(SHA_LABEL.into(), sha256.to_owned());
        labels.insert(ADDRESSES_LABEL.into(), serde_json::to_string(addresses).unwrap_or_default());
        let grace = stop_seconds(spec.stop_grace);
        let body = json!({
            "Image": image.id,
            "Cmd": spec.args,
            "Env": env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "Labels": labels,
            "User": CONTAINER_USER,
            "WorkingDir": "/",
            "StopSignal": "SIGTERM",
            "StopTimeout": grace,
            "HostConfig": {
                "NetworkMode": "host",
                "RestartPolicy": { "Name": "on-failure", "MaximumRetryCount": spec.restart.max_restarts },
                "LogConfig": {
                    "Type": "json-file",
                    "Config": {
                        "max-size": spec.log.max_bytes.to_string(),
                        "max-file": (spec.log.keep.saturating_add(1)).to_string(),
                    },
                },
            },
        });
        let action = format!("create the container {name}");
        let answer = self
            .call(
                Method::POST,
                &format!("/containers/create?name={name}"),
                Some(("application/json", Bytes::from(body.to_string()))),
                &action,
            )
            .await?;
        match answer.status {
            status if status.is_success() => Ok(()),
            // Another start of the same id made it first.
            StatusCode::CONFLICT => Err(RuntimeError::AlreadyRunning { id: spec.id.clone(), shim_pid: None }),
            _ => Err(answer.refused(&action).into()),
        }
    }

    /// Waits until the container runs and its first socket accepts connections (or until it is
    /// clear it ran and exited). `None`: its port was taken by someone else.
    async fn wait_started(
        &self,
        spec: &InstanceSpec,
        first: Option<SocketAddr>,
    ) -> Result<Option<Instance>, RuntimeError> {
        let id = spec.id.as_str();
        let started = Instant::now();
        loop {
            let instance = self.inspect(id).await?.ok_or_else(|| RuntimeError::StartFailed {
                id: id.to_owned(),
                reason: "its container was removed while it started".into(),
            })?;
            match instance.state {
                InstanceState::Running => {
                    let listening = match first {
                        Some(address) => {
                            tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(address))
                                .await
                                .is_ok_and(|connected| connected.is_ok())
                        }
                        None => true,
                    };
                    if listening || started.elapsed() > LISTEN_WAIT {
                        // It may have lost its port right after the connect: look once more.
                        if let Some(again) = self.inspect(id).await?
                            && again.state == InstanceState::Running
                        {
                            return Ok(Some(again));
                        }
                    }
                }
                InstanceState::Starting => {}
                _ => {
                    let lines = self.logs(id, 20).await?;
                    if lines.iter().any(|line| mentions_port_taken(line)) {
                        return Ok(None);
                    }
                    if instance.state == InstanceState::Exited && instance.last_exit.is_none() {
                        let detail = if lines.is_empty() { "no output".to_owned() } else { lines.join(" | ") };
                        return Err(RuntimeError::StartFailed { id: id.to_owned(), reason: detail });
                    }
                    return Ok(Some(instance));
                }
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(RuntimeError::Timeout {
                    id: id.to_owned(),
                    what: "the container did not run",
                    timeout: START_TIMEOUT,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Instance, RuntimeError> {
        spec.validate()?;
        let id = spec.id.as_str();
        let executable = read_executable(id, &spec.program).await?;
        let image = self.ensure_image(spec.labels.get("service").map(String::as_str), &executable).await?;
        if let Some(existing) = self.inspect(id).await? {
            if !existing.state.is_final() {
                return Err(RuntimeError::AlreadyRunning { id: id.to_owned(), shim_pid: None });
            }
            tracing::info!(instance = id, "replacing the container of a finished instance");
            self.delete_container(id).await?;
        }
        let name = self.container_name(id);
        for attempt in 1..=BIND_ATTEMPTS {
            let addresses = self.free_ports(spec).map_err(|err| RuntimeError::StartFailed {
                id: id.to_owned(),
                reason: format!("cannot find a free port on {}: {err}", spec.listen_host),
            })?;
            self.create(spec, &image, &executable.sha256, &addresses).await?;
            let action = format!("start the container {name}");
            let answer = self.call(Method::POST, &format!("/containers/{name}/start"), None, &action).await?;
            if !answer.status.is_success() && answer.status != StatusCode::NOT_MODIFIED {
                let reason = format!("Docker Engine could not start its container: {}", answer.message());
                self.delete_container(id).await?;
                return Err(RuntimeError::StartFailed { id: id.to_owned(), reason });
            }
            tracing::info!(instance = id, container = name, image = image.tag, ?addresses, "started a container");
            let first = spec.sockets.first().and_then(|socket| addresses.get(socket)).copied();
            match self.wait_started(spec, first).await {
                Ok(Some(instance)) => return Ok(instance),
                Ok(None) => {
                    tracing::warn!(
                        instance = id,
                        attempt,
                        "a port was taken before the container bound it; trying others"
                    );
                    self.delete_container(id).await?;
                }
                Err(err) => {
                    // Nothing half-started stays behind.
                    let _ = self.delete_container(id).await;
                    return Err(err);
                }
            }
        }
        Err(RuntimeError::StartFailed {
            id: id.to_owned(),
            reason: format!("the ports picked for it were taken by other programs {BIND_ATTEMPTS} times"),
        })
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let instance = self.inspect(id).await?.ok_or_else(|| RuntimeError::NotFound(id.to_owned()))?;
        if instance.state.is_final() {
            return Ok(());
        }
        let name = self.container_name(id);
        // No restart after the stop; and the mark that tells a stop from a crash.
        let action = format!("update the restart policy of {name}");
        let policy = json!({ "RestartPolicy": { "Name": "no", "MaximumRetryCount": 0 } }).to_string();
        let answer = self
            .call(
                Method::POST,
                &format!("/containers/{name}/update"),
                Some(("application/json", Bytes::from(policy))),
                &action,
            )
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Err(RuntimeError::NotFound(id.to_owned()));
        }
        answer.ok(&action)?;
        let grace = self.stop_grace_of(id).await?;
        let timeout = Duration::from_secs(grace) + STOP_SLACK;
        let action = format!("stop the container {name}");
        tracing::info!(instance = id, grace_seconds = grace, "stopping");
        let answer = self
            .inner
            .client
            .call(Method::POST, &format!("/containers/{name}/stop?t={grace}"), None, &action, timeout)
            .await?;
        match answer.status {
            status if status.is_success() || status == StatusCode::NOT_MODIFIED => Ok(()),
            StatusCode::NOT_FOUND => Err(RuntimeError::NotFound(id.to_owned())),
            _ => Err(answer.refused(&action).into()),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.stop(id).await?;
        self.delete_container(id).await?;
        tracing::info!(instance = id, "removed");
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        let mut instances = Vec::new();
        for id in self.container_ids().await? {
            // Removed meanwhile: not listed.
            if let Some(instance) = self.inspect(&id).await? {
                instances.push(instance);
            }
        }
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(instances)
    }

    async fn get(&self, id: &str) -> Result<Option<Instance>, RuntimeError> {
        validate_id(id)?;
        self.inspect(id).await
    }

    async fn logs(&self, id: &str, tail: usize) -> Result<Vec<String>, RuntimeError> {
        validate_id(id)?;
        let name = self.container_name(id);
        let action = format!("read the logs of {name}");
        let answer = self
            .call(
                Method::GET,
                &format!("/containers/{name}/logs?stdout=1&stderr=1&timestamps=1&tail={tail}"),
                None,
                &action,
            )
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Err(RuntimeError::NotFound(id.to_owned()));
        }
        let answer = answer.ok(&action)?;
        let mut lines = logs::demultiplex(&answer.body);
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
        Ok(lines)
    }
}

impl DockerRuntime {
    /// The stop grace the container was created with (seconds).
    async fn stop_grace_of(&self, id: &str) -> Result<u64, RuntimeError> {
        let name = self.container_name(id);
        let action = format!("inspect the container {name}");
        let answer = self.call(Method::GET, &format!("/containers/{name}/json"), None, &action).await?;
        let value = answer.ok(&action)?.json(&action)?;
        Ok(value.pointer("/Config/StopTimeout").and_then(Value::as_u64).unwrap_or(10))
    }
}

/// An executable read and checked for an image.
struct Executable {
    path: PathBuf,
    bytes: Vec<u8>,
    sha256: String,
}

async fn read_executable(id: &str, program: &Path) -> Result<Executable, RuntimeError> {
    let id = id.to_owned();
    let path = program.to_owned();
    tokio::task::spawn_blocking(move || {
        let problem = |reason: String| RuntimeError::Program { id: id.clone(), program: path.clone(), reason };
        let meta = std::fs::metadata(&path).map_err(|err| {
            problem(if err.kind() == std::io::ErrorKind::NotFound { "does not exist".into() } else { err.to_string() })
        })?;
        if !meta.is_file() {
            return Err(problem("is not a file".into()));
        }
        let bytes = image::read_program(&path).map_err(|err| problem(format!("cannot be read: {err}")))?;
        match image::check_static(&bytes) {
            Ok(()) => {}
            Err(image::NotStatic::Dynamic { interpreter }) => {
                return Err(problem(format!(
                    "is dynamically linked (it needs the loader {interpreter}); {STATIC_HINT}"
                )));
            }
            Err(image::NotStatic::NotElf(why)) => {
                return Err(problem(format!("cannot run alone in a container: {why}; {STATIC_HINT}")));
            }
        }
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok(Executable { path, bytes, sha256 })
    })
    .await
    .map_err(RuntimeError::Task)?
}

impl DockerRuntime {
    /// A free port on the listen host for each socket, picked by binding port 0 and letting go,
    /// and not one this runtime handed out recently.
    fn free_ports(&self, spec: &InstanceSpec) -> std::io::Result<BTreeMap<String, SocketAddr>> {
        let mut recent = self.inner.recent_ports.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Listeners are held until every socket has its port, so no two get the same one.
        let mut held = Vec::new();
        let mut addresses = BTreeMap::new();
        for name in &spec.sockets {
            let mut picked = None;
            for _ in 0..16 {
                let listener = std::net::TcpListener::bind(SocketAddr::new(spec.listen_host, 0))?;
                let address = listener.local_addr()?;
                held.push(listener);
                if !recent.contains(&address.port()) {
                    picked = Some(address);
                    break;
                }
            }
            let address = picked.ok_or_else(|| std::io::Error::other("only recently used ports were offered"))?;
            recent.push_back(address.port());
            if recent.len() > RECENT_PORTS {
                recent.pop_front();
            }
            addresses.insert(name.clone(), address);
        }
        Ok(addresses)
    }
}

fn stop_seconds(grace: Duration) -> u64 {
    grace.as_secs() + u64::from(grace.subsec_nanos() > 0)
}

fn mentions_port_taken(line: &str) -> bool {
    let line = line.to_ascii_lowercase();
    line.contains("address already in use") || line.contains("address in use") || line.contains("eaddrinuse")
}

/// Reads an instance from the daemon's inspection of its container; odd or missing fields give
/// the most cautious reading, never a panic.
fn instance_from(id: &str, value: &Value) -> Instance {
    let text = |pointer: &str| value.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    let labels_value = value.pointer("/Config/Labels").and_then(Value::as_object);
    let labels: BTreeMap<String, String> = labels_value
        .into_iter()
        .flatten()
        .filter(|(key, _)| !key.starts_with("windlass."))
        .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
        .collect();
    let addresses: BTreeMap<String, SocketAddr> = labels_value
        .and_then(|l| l.get(ADDRESSES_LABEL))
        .and_then(Value::as_str)
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    let status = text("/State/Status");
    let exit_code = value.pointer("/State/ExitCode").and_then(Value::as_i64).and_then(|c| i32::try_from(c).ok());
    let finished = !text("/State/FinishedAt").is_empty() && !text("/State/FinishedAt").starts_with("0001-");
    let start_error = !text("/State/Error").is_empty();
    let stopped_on_request = text("/HostConfig/RestartPolicy/Name") == "no";
    let restarting = value.pointer("/State/Restarting").and_then(Value::as_bool).unwrap_or(false);
    let state = match status {
        "created" if start_error => InstanceState::Exited,
        // Created, never started, then stopped (e.g. a starter that died in between).
        "created" if stopped_on_request => InstanceState::Stopped,
        "created" => InstanceState::Starting,
        "restarting" => InstanceState::BackingOff,
        "running" | "paused" if restarting => InstanceState::BackingOff,
        "running" | "paused" => InstanceState::Running,
        "removing" => InstanceState::Stopped,
        _ if stopped_on_request => InstanceState::Stopped,
        "exited" | "dead" if exit_code == Some(0) => InstanceState::Exited,
        _ => InstanceState::CrashLoop,
    };
    let alive = !state.is_final();
    let last_exit = (finished && !matches!(state, InstanceState::Running | InstanceState::Starting))
        .then_some(ExitInfo { code: exit_code, signal: None });
    let started_at = [text("/State/StartedAt"), text("/Created")]
        .into_iter()
        .filter(|t| !t.starts_with("0001-"))
        .find_map(|t| t.parse::<jiff::Timestamp>().ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    Instance {
        id: id.to_owned(),
        labels,
        addresses,
        state,
        shim_pid: None,
        child_pid: value
            .pointer("/State/Pid")
            .and_then(Value::as_u64)
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|&pid| pid > 0 && alive),
        restarts: value.get("RestartCount").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        last_exit,
        started_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_states_map_to_instance_states() {
        let inspect = |status: &str, exit: i64, policy: &str, error: &str| {
            json!({
                "State": { "Status": status, "ExitCode": exit, "Error": error, "Pid": 42,
                           "StartedAt": "2026-01-01T00:00:00.5Z", "FinishedAt": "2026-01-01T00:00:01Z" },
                "HostConfig": { "RestartPolicy": { "Name": policy } },
                "RestartCount": 3,
                "Config": { "Labels": { "service": "web", "windlass.instance": "a",
                                        "windlass.addresses": "{\"http\":\"127.0.0.1:8080\"}" } },
            })
        };
        let state = |v: Value| instance_from("a", &v).state;
        assert_eq!(state(inspect("running", 0, "on-failure", "")), InstanceState::Running);
        assert_eq!(state(inspect("restarting", 1, "on-failure", "")), InstanceState::BackingOff);
        assert_eq!(state(inspect("exited", 1, "on-failure", "")), InstanceState::CrashLoop);
        assert_eq!(state(inspect("exited", 143, "no", "")), InstanceState::Stopped);
        assert_eq!(state(inspect("exited", 0, "on-failure", "")), InstanceState::Exited);
        assert_eq!(state(inspect("created", 0, "on-failure", "")), InstanceState::Starting);
        assert_eq!(state(inspect("created", 127, "on-failure", "exec failed")), InstanceState::Exited);
        assert_eq!(state(inspect("created", 0, "no", "")), InstanceState::Stopped);
        let running = instance_from("a", &inspect("running", 0, "on-failure", ""));
        assert_eq!(running.labels, BTreeMap::from([("service".to_owned(), "web".to_owned())]));
        assert_eq!(running.addresses["http"], "127.0.0.1:8080".parse().unwrap());
        assert_eq!((running.child_pid, running.restarts, running.last_exit), (Some(42), 3, None));
        let crashed = instance_from("a", &inspect("exited", 1, "on-failure", ""));
        assert_eq!((crashed.child_pid, crashed.last_exit.and_then(|e| e.code)), (None, Some(1)));
        // Nonsense gives a cautious reading, not a panic.
        assert_eq!(instance_from("a", &json!([1, 2])).state, InstanceState::CrashLoop);
        assert_eq!(instance_from("a", &json!({ "State": { "Status": 5 } })).addresses, BTreeMap::new());
    }

    #[test]
    fn scopes_are_checked() {
        assert!(DockerRuntime::new("abc-123").is_ok());
        for scope in ["", "A", "a_b", &"x".repeat(33)] {
            assert!(matches!(DockerRuntime::new(scope), Err(DockerError::InvalidScope { .. })), "{scope}");
        }
        let runtime = DockerRuntime::for_state_dir(Path::new("/var/lib/windlass"));
        assert_eq!(runtime.scope().len(), 12);
        assert_eq!(runtime.container_name("web-1"), format!("windlass-{}-web-1", runtime.scope()));
    }

    #[test]
    fn grace_rounds_up_to_whole_seconds() {
        assert_eq!(stop_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(stop_seconds(Duration::from_secs(10)), 10);
        assert_eq!(stop_seconds(Duration::ZERO), 0);
    }
}
