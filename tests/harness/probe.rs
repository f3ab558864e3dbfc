//! Speaking to the probe test controller (examples/test-controllers/probe): its greeting,
//! its replies, and parsing its `info` and `closed` texts.

use anyhow::{Context, Result, bail};

use super::{Client, Server};

impl Server {
    /// Opens a probe connection to `path` and returns it with the id from its `open {id}`.
    pub(crate) async fn connect_probe(&self, path: &str) -> Result<(Client, u64)> {
        let mut client = self.connect(path).await?;
        let id = client.expect_open().await?;
        Ok((client, id))
    }
}

impl Client {
    /// Sends `text` to a probe and returns its reply, skipping the `closed ...` notices the
    /// probe broadcasts when other connections close (tests that do not wait for those
    /// closes cannot know whether the notices come before or after the reply).
    pub(crate) async fn probe_request(&mut self, text: &str) -> Result<String> {
        self.send_text(text).await?;
        loop {
            let reply = self.recv_text().await?;
            if !reply.starts_with("closed ") {
                return Ok(reply);
            }
        }
    }

    /// Receives the probe's `open {id}` greeting and returns the id.
    pub(crate) async fn expect_open(&mut self) -> Result<u64> {
        let text = self.recv_text().await?;
        let id = text
            .strip_prefix("open ")
            .with_context(|| format!("expected `open {{id}}`, got {text:?}"))?;
        Ok(id.parse()?)
    }
}

/// Parses a probe `info` reply into `(key, value)` lines, in order.
pub(crate) fn parse_info(info: &str) -> Vec<(String, String)> {
    info.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The value of `key` in a parsed probe `info` reply.
pub(crate) fn info_value<'a>(info: &'a [(String, String)], key: &str) -> Option<&'a str> {
    info.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A probe `closed {id} {code} {reason}` notice.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Closed {
    /// The closed connection.
    pub(crate) id: u64,
    /// The close code on-close saw.
    pub(crate) code: u16,
    /// The close reason on-close saw.
    pub(crate) reason: String,
}

/// Parses a probe `closed {id} {code} {reason}` notice.
pub(crate) fn parse_closed(text: &str) -> Result<Closed> {
    let mut parts = text.splitn(4, ' ');
    let (Some("closed"), Some(id), Some(code)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("expected `closed {{id}} {{code}} {{reason}}`, got {text:?}");
    };
    Ok(Closed {
        id: id.parse()?,
        code: code.parse()?,
        reason: parts.next().unwrap_or("").to_owned(),
    })
}
