//! The cluster metrics of Argo CD's application controller, from the registry's projection at
//! each scrape, so that dashboards and alerts written for Argo CD work unchanged:
//! `argocd_cluster_info`, `argocd_cluster_connection_status`, `argocd_cluster_api_resources`,
//! `argocd_cluster_api_resource_objects` (where the cache info knows it) and
//! `argocd_cluster_cache_age_seconds` (-1 if never synced).

use corral_cluster_model::read_model;
use corral_projection::Projection;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug)]
pub struct ClusterMetrics {
    projection: Projection,
}

impl ClusterMetrics {
    pub fn new(projection: Projection) -> ClusterMetrics {
        ClusterMetrics { projection }
    }
}

/// One gauge per cluster.
struct Series {
    server: String,
    name: String,
    version: String,
    connected: bool,
    api_resources: Option<i64>,
    objects: Option<i64>,
    cache_age: i64,
}

fn series(projection: &Projection, now_unix: i64) -> Vec<Series> {
    let clusters = match read_model::live_clusters(projection) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cluster metrics: cannot read the projection");
            return Vec::new();
        }
    };
    clusters
        .iter()
        .map(|record| {
            let cluster = read_model::render(record);
            let info = cluster.info.unwrap_or_default();
            let cache = info.cache_info.unwrap_or_default();
            let connected = info.connection_state.is_some_and(|s| s.status == "Successful");
            let cache_age = cache.last_cache_sync_time.map_or(-1, |t| (now_unix - t.seconds).max(0));
            Series {
                server: cluster.server,
                name: cluster.name,
                version: info.server_version,
                connected,
                api_resources: cache.apis_count,
                objects: cache.resources_count,
                cache_age,
            }
        })
        .collect()
}

type Result = std::result::Result<(), std::fmt::Error>;

fn gauge<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl Iterator<Item = (Vec<(&'static str, &'a str)>, i64)>,
) -> Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for ClusterMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result {
        let all = series(&self.projection, corral_events::now_unix());
        gauge(
            &mut encoder,
            "argocd_cluster_info",
            "Information about cluster",
            all.iter().map(|s| {
                (vec![("server", s.server.as_str()), ("k8s_version", s.version.as_str()), ("name", s.name.as_str())], 1)
            }),
        )?;
        gauge(
            &mut encoder,
            "argocd_cluster_connection_status",
            "The k8s cluster current connection status",
            all.iter().map(|s| {
                (vec![("server", s.server.as_str()), ("k8s_version", s.version.as_str())], i64::from(s.connected))
            }),
        )?;
        gauge(
            &mut encoder,
            "argocd_cluster_api_resources",
            "Number of monitored kubernetes API resources",
            all.iter().filter_map(|s| Some((vec![("server", s.server.as_str())], s.api_resources?))),
        )?;
        gauge(
            &mut encoder,
            "argocd_cluster_api_resource_objects",
            "Number of k8s resource objects in the cache",
            all.iter().filter_map(|s| Some((vec![("server", s.server.as_str())], s.objects?))),
        )?;
        gauge(
            &mut encoder,
            "argocd_cluster_cache_age_seconds",
            "Cluster cache age in seconds",
            all.iter().map(|s| (vec![("server", s.server.as_str())], s.cache_age)),
        )
    }
}
