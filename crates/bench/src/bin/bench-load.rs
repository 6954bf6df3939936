//! `bench-load`: an open-loop HTTP/1.1 load generator. Requests are scheduled at a fixed total
//! rate over keep-alive connections; each request's latency is measured from the moment it was
//! *scheduled*, not sent, so a stalled server shows up in the percentiles instead of silently
//! lowering the rate (the coordinated-omission correction of wrk2 and `oha --latency-correction`).
//! Every non-2xx answer, reset, connect error or timeout counts as a failure.
//!
//! A request is sent when it is due or, if the connection's previous answer came later, as soon
//! as that answer is in. Its latency counts from when it was due in the second case (the server's
//! delay, which a closed loop would hide) and from when it was sent in the first, so the load
//! generator's own timer, whose granularity is a millisecond, adds nothing to the figures.
//! Percentiles are exact (every latency is kept and sorted), to the microsecond.
//!
//! Prints one JSON object: requests, failures by kind, achieved rate, p50/p90/p99/p99.9/max in µs.

// A benchmark client: its tasks live as long as the run.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

#[derive(Parser)]
struct Args {
    /// Where to send requests.
    #[arg(long)]
    target: SocketAddr,
    /// The Host header.
    #[arg(long, default_value = "localhost")]
    host: String,
    #[arg(long, default_value = "/")]
    path: String,
    /// Requests per second, all connections together.
    #[arg(long)]
    rate: u64,
    #[arg(long, default_value_t = 32)]
    connections: u64,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// A request not answered within this many milliseconds is a failure.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

#[derive(Default)]
struct Outcome {
    ok: u64,
    failures: BTreeMap<String, u64>,
    /// Each successful request's latency, µs.
    latencies: Vec<u32>,
}

/// The latency at quantile `q` of sorted latencies (nearest rank).
fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let report = runtime.block_on(run(args));
    println!("{report}");
}

async fn run(args: Args) -> serde_json::Value {
    let started = Instant::now();
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate as f64);
    let total_per_connection = ((args.seconds * args.rate as f64) / args.connections as f64).ceil() as u64;
    let args = Arc::new(args);
    let tasks: Vec<_> = (0..args.connections)
        .map(|index| {
            let args = args.clone();
            // Spread the connections' schedules evenly over one interval.
            let offset = interval.mul_f64(index as f64 / args.connections as f64);
            tokio::spawn(async move { connection(&args, started + offset, interval, total_per_connection).await })
        })
        .collect();
    let mut outcome = Outcome::default();
    for task in tasks {
        if let Ok(part) = task.await {
            outcome.ok += part.ok;
            for (kind, count) in part.failures {
                *outcome.failures.entry(kind).or_default() += count;
            }
            outcome.latencies.extend(part.latencies);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    outcome.latencies.sort_unstable();
    let sorted = &outcome.latencies;
    let failed: u64 = outcome.failures.values().sum();
    serde_json::json!({
        "requests": outcome.ok + failed,
        "ok": outcome.ok,
        "failed": failed,
        "failures": outcome.failures,
        "target_rate": args.rate,
        "achieved_rate": ((outcome.ok + failed) as f64 / elapsed).round(),
        "p50_us": quantile(sorted, 0.50),
        "p90_us": quantile(sorted, 0.90),
        "p99_us": quantile(sorted, 0.99),
        "p999_us": quantile(sorted, 0.999),
        "max_us": quantile(sorted, 1.0),
    })
}

async fn connection(args: &Args, first: Instant, interval: Duration, count: u64) -> Outcome {
    let mut outcome = Outcome::default();
    let mut sender: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
    for n in 0..count {
        let scheduled = first + interval.mul_f64(n as f64);
        // Behind schedule (the previous answer came after this request was due): send now and
        // count from when it was due. Else wait for it, and count from when it leaves: the timer
        // wakes up to a millisecond late, which is this generator's lag, not the server's.
        let behind = Instant::now() >= scheduled;
        if !behind {
            tokio::time::sleep_until(scheduled.into()).await;
        }
        let from = if behind { scheduled } else { Instant::now() };
        let result = tokio::time::timeout(Duration::from_millis(args.timeout_ms), request(args, &mut sender)).await;
        let micros = u32::try_from(from.elapsed().as_micros()).unwrap_or(u32::MAX);
        match result {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                outcome.ok += 1;
                outcome.latencies.push(micros);
            }
            Ok(Ok(status)) => *outcome.failures.entry(format!("status {status}")).or_default() += 1,
            Ok(Err(kind)) => {
                *outcome.failures.entry(kind).or_default() += 1;
                sender = None;
            }
            Err(_) => {
                *outcome.failures.entry("timeout".into()).or_default() += 1;
                sender = None;
            }
        }
    }
    outcome
}

async fn request(
    args: &Args,
    sender: &mut Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
) -> Result<u16, String> {
    if sender.is_none() {
        let stream = tokio::net::TcpStream::connect(args.target).await.map_err(|e| format!("connect: {}", e.kind()))?;
        let _ = stream.set_nodelay(true);
        let (new_sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|_| "handshake".to_owned())?;
        tokio::spawn(connection);
        *sender = Some(new_sender);
    }
    // A keep-alive connection the server closed between requests (nginx does after 1,000): the
    // request was never sent, so any client opens a new connection; that is not a failure.
    if let Some(active) = sender.as_mut()
        && active.ready().await.is_err()
    {
        *sender = None;
        return Box::pin(request(args, sender)).await;
    }
    let Some(active) = sender.as_mut() else { return Err("no connection".into()) };
    let request = hyper::Request::get(args.path.as_str())
        .header("host", args.host.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = active.send_request(request).await.map_err(|_| "reset".to_owned())?;
    let status = response.status().as_u16();
    response.into_body().collect().await.map_err(|_| "body cut".to_owned())?;
    Ok(status)
}
