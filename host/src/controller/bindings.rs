//! The generated wasmtime bindings, kept private to this module tree: the rest of the
//! host sees only the names re-exported here.
//!
//! Exports are async so a call can yield at epoch ticks (a spinning guest must not hold a
//! tokio worker); host imports are sync because every one of them only enqueues or reads
//! host memory and never waits.
//!
//! Optional capabilities are generated from the larger worlds that add them, reusing the
//! base world's types, and looked up per component: a component that lacks an optional
//! export simply does not get that capability.

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "controller",
        exports: { default: async },
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

mod full {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "controller-full",
        exports: { default: async },
        ownership: Borrowing { duplicate_if_necessary: true },
        with: {
            "wshost:controller/types": super::generated::wshost::controller::types,
            "wshost:controller/host": super::generated::wshost::controller::host,
            "wshost:controller/topics": super::generated::wshost::controller::topics,
        },
    });
}

pub(crate) use full::exports::wshost::controller::handshake::{
    Guest as HandshakeGuest, GuestIndices as HandshakeIndices, Request as HandshakeRequest,
    Response as HandshakeResponse,
};
pub(crate) use full::exports::wshost::controller::lifecycle::{
    Guest as LifecycleGuest, GuestIndices as LifecycleIndices, ServerParams,
};
pub(crate) use full::exports::wshost::controller::state::{
    Guest as StateGuest, GuestIndices as StateIndices,
};
pub(crate) use full::exports::wshost::controller::timer_handler::{
    Guest as TimerGuest, GuestIndices as TimerIndices,
};
pub(crate) use full::wshost::controller::timers::{
    Host as TimersHost, add_to_linker as add_timers_to_linker,
};
pub(crate) use generated::wshost::controller::host::{Host, add_to_linker};
pub(crate) use generated::wshost::controller::topics::{
    Host as TopicsHost, TopicError as WitTopicError, TopicPresence as WitPresence,
    add_to_linker as add_topics_to_linker,
};
pub(crate) use generated::wshost::controller::types::{
    ConnectionInfo as WitConnectionInfo, Host as TypesHost, LogLevel,
    MessageParam as WitMessageRef, MessageResult as WitMessage, SendError,
};
pub(crate) use generated::{Controller, ControllerPre};
