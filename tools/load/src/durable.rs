//! Durable writes on the production shape: three clustered nats-server nodes with
//! `sync_interval: always` and the stream at three replicas. The floor is what one event of a
//! create costs there: a publish-with-ack to an R3 file stream expecting its subject empty
//! (`Nats-Expected-Last-Subject-Sequence: 0`), from as many clients as the API phases; then
//! Create, Update and Get through the gateway against it.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use corral_proto::cluster::{ClusterCreateRequest, ClusterUpdateRequest};
use std::sync::Arc;

use crate::{Client, Stats, cluster, drive, report, run_get_from, us};

const STREAM: &str = "LOADDURABLE";

/// One event a create appends: a new subject, expected empty, 600 bytes (a cluster event's size).
async fn floor(name: &str, js: Arc<jetstream::Context>, clients: usize, seconds: u64, run: usize) -> Stats {
    drive(name, clients, None, seconds, move |i| {
        let js = js.clone();
        async move {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
            let subject = format!("loaddurable.{run}.{i}");
            match js.publish_with_headers(subject, headers, bytes::Bytes::from_static(&[0u8; 600])).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await
}

/// The messages of a create on the three-node cluster with none of the work (`crate::flow` on
/// R3 streams: request and reply, claim and event in one atomic batch, two followers, the public
/// event appended by a stand-in publisher and followed by a stand-in hub).
async fn design_floor(
    nats_url: &str,
    name: &str,
    clients: usize,
    seconds: u64,
    (claim, public): (bool, bool),
) -> anyhow::Result<Stats> {
    let flow = crate::flow::start(nats_url, claim, 3, public).await?;
    let cl = Arc::new(crate::clients(flow.addr, clients, crate::BearerToken::default()).await?);
    let stats = drive(name, clients, None, seconds, move |i| {
        let mut g = cl[i % cl.len()].clone();
        async move { g.create(ClusterCreateRequest { cluster: Some(cluster(i)), upsert: false }).await.is_ok() }
    })
    .await;
    flow.stop().await;
    Ok(stats)
}

pub async fn measure(
    nats: async_nats::Client,
    nats_url: &str,
    gw: Arc<Vec<Client>>,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let js = jetstream::new(nats);
    let _ = js.delete_stream(STREAM).await;
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["loaddurable.>".into()],
        storage: stream::StorageType::File,
        num_replicas: 3,
        ..Default::default()
    })
    .await?;
    let js = Arc::new(js);
    let floor_many = floor("floor: R3 pub+ack, subject expected", js.clone(), clients, seconds, 0).await;
    let floor_one = floor("floor: R3 pub+ack, subject expected (1 client)", js.clone(), 1, seconds.min(3), 1).await;
    let _ = js.delete_stream(STREAM).await;
    report(&floor_many, None);
    report(&floor_one, None);
    let all = (true, true);
    let flow_many = design_floor(nats_url, "floor: a create's messages, R3", clients, seconds, all).await?;
    let flow_one = design_floor(nats_url, "floor: a create's messages, R3 (1 client)", 1, seconds.min(3), all).await?;
    // What each part of the design costs: the public event, and the name claim.
    let no_public =
        design_floor(nats_url, "floor: ... without the public event", clients, seconds, (true, false)).await?;
    let bare = design_floor(nats_url, "floor: ... nor the name claim", clients, seconds, (false, false)).await?;
    for (stats, floor) in
        [(&flow_many, &floor_many), (&flow_one, &floor_one), (&no_public, &floor_many), (&bare, &floor_many)]
    {
        report(stats, Some(("floor", floor.pct(0.5))));
    }

    // New clusters past any an earlier run registered.
    let base = 1_000_000 + std::process::id() as usize * 100_000;
    let total = (floor_many.ops() * seconds as f64).clamp(500.0, 20_000.0) as usize;
    let cl = gw.clone();
    let create = drive(&format!("Create ({clients} clients)"), clients, Some(total), 0, move |i| {
        let mut g = cl[i % cl.len()].clone();
        async move { g.create(ClusterCreateRequest { cluster: Some(cluster(base + i)), upsert: false }).await.is_ok() }
    })
    .await;
    let cl = gw.clone();
    let create_one = drive("Create (1 client)", 1, Some(300), 0, move |i| {
        let mut g = cl[0].clone();
        async move {
            g.create(ClusterCreateRequest { cluster: Some(cluster(base + total + i)), upsert: false }).await.is_ok()
        }
    })
    .await;
    let n = total;
    let cl = gw.clone();
    let update = drive(&format!("Update ({clients} clients)"), clients, None, seconds, move |i| {
        let mut g = cl[i % cl.len()].clone();
        async move {
            let mut c = cluster(base + i % n);
            c.labels.insert("round".into(), i.to_string());
            let req = ClusterUpdateRequest { cluster: Some(c), updated_fields: vec!["labels".into()], id: None };
            g.update(req).await.is_ok()
        }
    })
    .await;
    let get = run_get_from(&format!("Get ({clients} clients)"), gw.clone(), clients, base, n, seconds).await;
    report(&create, Some(("floor", floor_many.pct(0.5))));
    report(&create_one, Some(("floor 1 client", floor_one.pct(0.5))));
    report(&update, Some(("floor", floor_many.pct(0.5))));
    report(&get, None);
    println!(
        "durable Create at {clients} clients: {:.0}/s = {:.0} % of the floor's {:.0}/s (target >= 60 %); \
         p50 {:.1} ms = {:.2}x the floor's {:.1} ms (target <= 2.5x)",
        create.ops(),
        create.ops() / floor_many.ops().max(0.001) * 100.0,
        floor_many.ops(),
        us(create.pct(0.5)) / 1000.0,
        us(create.pct(0.5)) / us(floor_many.pct(0.5)).max(0.001),
        us(floor_many.pct(0.5)) / 1000.0,
    );
    println!(
        "against a create's own messages on R3 (no work done): Create {:.0} % of its {:.0}/s, p50 {:.2}x its {:.1} ms",
        create.ops() / flow_many.ops().max(0.001) * 100.0,
        flow_many.ops(),
        us(create.pct(0.5)) / us(flow_many.pct(0.5)).max(0.001),
        us(flow_many.pct(0.5)) / 1000.0,
    );
    Ok(())
}
