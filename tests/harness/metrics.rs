//! The metrics port of a running server: its address (from the `metrics listening` log
//! event), requests to it with a real HTTP client (`minreq`, which shares no code with
//! wshost), and `/metrics` parsed by a Prometheus text-format parser
//! (`prometheus-parse`), so tests assert on values, not on substrings.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use prometheus_parse::Value;

use super::{HANG_GUARD, Server};

/// The pause between two scrapes while waiting for a value.
const POLL: Duration = Duration::from_millis(20);

/// An answer of the metrics port.
#[derive(Debug)]
pub(crate) struct MetricsAnswer {
    /// The status code.
    pub(crate) status: u16,
    /// The `Content-Type` header.
    pub(crate) content_type: Option<String>,
    /// The body.
    pub(crate) body: String,
}

impl Server {
    /// Where the server's metrics listen (it logs the bound address at start).
    pub(crate) async fn metrics_addr(&self) -> Result<SocketAddr> {
        let event = self
            .log_event("saying where the metrics listen", |e| {
                e["message"] == "metrics listening"
            })
            .await?;
        let addr = event["addr"].as_str().context("no `addr` field")?;
        Ok(addr.parse()?)
    }

    /// Sends `METHOD path` to the metrics port and returns the answer.
    pub(crate) async fn metrics_request(&self, method: &str, path: &str) -> Result<MetricsAnswer> {
        let url = format!("http://{}{path}", self.metrics_addr().await?);
        let method = match method {
            "GET" => minreq::Method::Get,
            "POST" => minreq::Method::Post,
            other => minreq::Method::Custom(other.to_owned()),
        };
        let request = minreq::Request::new(method, url).with_timeout(HANG_GUARD.as_secs());
        let response = tokio::task::spawn_blocking(move || request.send())
            .await?
            .context("requesting the metrics port")?;
        Ok(MetricsAnswer {
            status: response.status_code,
            content_type: response.header("content-type").map(str::to_owned),
            body: response.as_str()?.to_owned(),
        })
    }

    /// `GET /metrics`, parsed.
    pub(crate) async fn scrape(&self) -> Result<Scrape> {
        let answer = self.metrics_request("GET", "/metrics").await?;
        ensure!(answer.status == 200, "GET /metrics answered {answer:?}");
        let lines = answer.body.lines().map(|l| Ok(l.to_owned()));
        Ok(Scrape(prometheus_parse::Scrape::parse(lines)?))
    }

    /// Scrapes until `done` holds for a scrape (at most the hang guard) and returns that
    /// scrape.
    pub(crate) async fn scrape_until(
        &self,
        what: &str,
        done: impl Fn(&Scrape) -> Result<bool>,
    ) -> Result<Scrape> {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            let scrape = self.scrape().await?;
            if done(&scrape)? {
                return Ok(scrape);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the metrics never showed {what} (hang guard); last scrape:\n{scrape:#?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// One parsed scrape of `/metrics`.
#[derive(Debug)]
pub(crate) struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    /// The samples of series `name` (as written, e.g. `wshost_upgrades_total`) whose
    /// labels are exactly `labels`.
    fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> + 'a {
        self.0.samples.iter().filter(move |s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// The value of the counter or gauge `name` with exactly `labels`; an error if the
    /// scrape has no such sample.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let sample = self
            .samples(name, labels)
            .next()
            .ok_or_else(|| anyhow!("no sample {name}{labels:?}"))?;
        match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Ok(v),
            ref other => bail!("{name}{labels:?} is not a single value: {other:?}"),
        }
    }

    /// The number of observations of histogram `name` with exactly `labels` (its
    /// `+Inf` bucket).
    pub(crate) fn observations(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let sample = self
            .samples(name, labels)
            .next()
            .ok_or_else(|| anyhow!("no histogram {name}{labels:?}"))?;
        let Value::Histogram(buckets) = &sample.value else {
            bail!("{name}{labels:?} is not a histogram: {:?}", sample.value);
        };
        let all = buckets
            .iter()
            .find(|b| b.less_than == f64::INFINITY)
            .context("no +Inf bucket")?;
        Ok(all.count)
    }

    /// Whether the scrape has any sample of series `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.samples.iter().any(|s| s.metric == name)
    }

    /// The sum of series `name` over all its label sets (0 without samples).
    pub(crate) fn total(&self, name: &str) -> f64 {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }
}
