//! Servers and clients for the hostile test controller (sandbox and limits tests).

use anyhow::{Context, Result, ensure};

use super::{Client, RawPeer, Route, Server, guests, opcode, routes_toml};

impl Server {
    /// A server with the hostile controller on `/hostile/*` (route `limits` as given, an
    /// inline-table body such as `"call-deadline-ms = 300"`) and echo on `/echo/*`.
    pub(crate) async fn hostile_and_echo(limits: &str) -> Result<Self> {
        Self::start(&routes_toml(&[
            Route::to(&guests().hostile).at("/hostile/*").limits(limits),
            Route::to(&guests().echo).at("/echo/*"),
        ]))
        .await
    }

    /// Connects to the hostile controller and reads its `open {id}` greeting.
    pub(crate) async fn open_hostile(&self, path: &str) -> Result<(Client, u64)> {
        let mut client = self.connect(path).await?;
        let id = greeting_id(&client.recv_text().await?)?;
        Ok((client, id))
    }

    /// A raw peer on the hostile controller, its greeting read.
    pub(crate) async fn open_raw_hostile(&self, path: &str) -> Result<(RawPeer, u64)> {
        let mut peer = self.raw_peer(path).await?;
        let frame = peer.read_frame().await?.context("no greeting")?;
        ensure!(frame.opcode == opcode::TEXT, "greeting {frame:?}");
        let id = greeting_id(&String::from_utf8(frame.payload)?)?;
        Ok((peer, id))
    }
}

fn greeting_id(hello: &str) -> Result<u64> {
    Ok(hello
        .strip_prefix("open ")
        .with_context(|| format!("expected `open ID`, got {hello:?}"))?
        .parse()?)
}
