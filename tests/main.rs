//! Integration tests of wshost: the real `wshost` binary, real sockets, real `.wasm`
//! controllers (examples/echo, examples/chat and the test-only probe). One module per
//! behaviour; [`harness`] is shared by all of them.

mod harness;

mod autobahn;
mod bearer_audience;
mod behind_a_proxy;
mod browser_chat;
mod chat;
mod close;
mod cluster;
mod compile_cache;
mod config_errors;
mod connection_info;
mod docs;
mod echo;
mod examples_run;
mod filter_bearer;
mod filter_order;
mod filter_rules;
mod guest_log;
mod half_open;
mod handshake_hook;
mod hop;
mod hot_reload;
mod http_errors;
mod lifecycle;
mod limits;
mod metrics;
mod new_project;
mod path_normalisation;
mod request_limits;
mod routes_reload;
mod routing;
mod sandbox;
mod shutdown;
mod static_files;
mod subprotocol;
mod timers;
mod tls;
mod token_command;
mod token_privacy;
mod topics;
mod trap;
mod trusted_proxies;
mod watch_mode;
mod wit_compat;
