//! The generated wasmtime bindings for the `controller` world, kept private to this
//! module tree: the rest of the host sees only the names re-exported here.
//!
//! Exports are async so a call can yield at epoch ticks (a spinning guest must not hold a
//! tokio worker); host imports are sync because every one of them only enqueues or reads
//! host memory and never waits.

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "controller",
        exports: { default: async },
    });
}

pub(crate) use generated::wshost::controller::host::{Host, add_to_linker};
pub(crate) use generated::wshost::controller::types::{
    ConnectionInfo as WitConnectionInfo, Host as TypesHost, LogLevel, Message as WitMessage,
    SendError,
};
pub(crate) use generated::{Controller, ControllerPre};
