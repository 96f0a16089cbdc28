//! What exporting every span costs: Create and Get through a gateway whose deployment exports
//! nothing, and through one whose deployment (its own nats-server and registry) samples every
//! trace and exports it over OTLP, in turns so that both see the same machine; and the OTLP
//! receiver the traced deployment exports to (`--otlp-sink`), which counts the spans.

use std::net::SocketAddr;
use std::sync::Arc;

use corral_proto::cluster::ClusterCreateRequest;

use crate::{BearerToken, Client, Stats, clients, cluster, drive, report, run_get_from, us};

/// Runs an OTLP receiver on `addr` until SIGTERM or Ctrl-C, then prints how many spans came.
pub async fn sink(addr: SocketAddr) -> anyhow::Result<()> {
    let receiver = corral_test_harness::otlp::Receiver::start_on(addr, true).await?;
    // The same line as the services', so that the scripts find the address the same way.
    println!("otlp sink listening on {}", receiver.endpoint().trim_start_matches("http://"));
    corral_telemetry::shutdown_signal().await;
    println!("otlp sink: {} spans received", receiver.count());
    Ok(())
}

const ROUNDS: usize = 3;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median, over turns, of each turn's cost (traced against the untraced turn just before).
fn summary(what: &str, plain: &[Stats], traced: &[Stats]) {
    let mut costs: Vec<f64> = plain
        .iter()
        .zip(traced)
        .map(|(p, t)| (us(t.pct(0.5)) - us(p.pct(0.5))) / us(p.pct(0.5)).max(0.001) * 100.0)
        .collect();
    let turns = costs.iter().map(|c| format!("{c:+.1}%")).collect::<Vec<_>>().join(", ");
    let mut p: Vec<f64> = plain.iter().map(|s| us(s.pct(0.5))).collect();
    let mut t: Vec<f64> = traced.iter().map(|s| us(s.pct(0.5))).collect();
    println!(
        "tracing on ({what}): p50 {:.1}us -> {:.1}us (medians); turn by turn {turns}: median {:+.1}% of p50",
        median(&mut p),
        median(&mut t),
        median(&mut costs)
    );
}

async fn creates(name: String, gw: Arc<Vec<Client>>, clients: usize, first: usize, count: usize) -> Stats {
    drive(&name, clients, Some(count), 0, move |i| {
        let mut g = gw[i % gw.len()].clone();
        async move { g.create(ClusterCreateRequest { cluster: Some(cluster(first + i)), upsert: false }).await.is_ok() }
    })
    .await
}

/// Create (`creates_per_turn` at a time) and Get, with `c` clients and with one, in turns.
pub async fn measure(
    plain_addr: SocketAddr,
    traced_addr: SocketAddr,
    c: usize,
    seconds: u64,
    creates_per_turn: usize,
) -> anyhow::Result<()> {
    let plain = Arc::new(clients(plain_addr, c, BearerToken::default()).await?);
    let traced = Arc::new(clients(traced_addr, c, BearerToken::default()).await?);
    // Each deployment gets the same clusters, numbered from an offset of this run's own.
    let base = std::process::id() as usize * 100_000;
    let mut next = base;
    let (mut plain_creates, mut traced_creates) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let p = creates(format!("Create, no tracing #{round}"), plain.clone(), c, next, creates_per_turn).await;
        let t = creates(format!("Create, traced #{round}"), traced.clone(), c, next, creates_per_turn).await;
        next += creates_per_turn;
        report(&p, None);
        report(&t, None);
        plain_creates.push(p);
        traced_creates.push(t);
    }
    summary(&format!("Create, {c} clients"), &plain_creates, &traced_creates);
    let registered = next - base;
    for clients in [c, 1] {
        let (mut plain_gets, mut traced_gets) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let name = |side: &str| format!("Get, {side}, {clients} client(s) #{round}");
            let p = run_get_from(&name("no tracing"), plain.clone(), clients, base, registered, seconds).await;
            let t = run_get_from(&name("traced"), traced.clone(), clients, base, registered, seconds).await;
            report(&p, None);
            report(&t, None);
            plain_gets.push(p);
            traced_gets.push(t);
        }
        summary(&format!("Get, {clients} client(s)"), &plain_gets, &traced_gets);
    }
    Ok(())
}
