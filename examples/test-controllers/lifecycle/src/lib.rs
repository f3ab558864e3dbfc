//! A test-only controller for lifecycle hooks, timers, state handoff and hot reload.
//!
//! It records every lifecycle event in a log (`events` returns it, `;`-separated) and
//! answers text commands: `events`; `params`; `timer MS once|repeat` (replies `timer
//! ID`, or `timer error WHY` past the timer cap; firing broadcasts `fired ID`); `timers
//! N MS` (sets N one-shot timers of MS ms, stopping at the first error; replies `timers
//! SET` or `timers SET error WHY`); `cancel ID` (replies `cancelled true|false`);
//! `count` (a counter carried across reloads by snapshot/restore); `panic`. Anything
//! else is answered `VERSION:text`, VERSION being `v1` or, built with feature `v2`,
//! `v2`. Built with `bad-init`, `init` refuses to start; with `trap-init`, it panics.
//! On shutdown it broadcasts
//! `shutdown`.

use std::cell::RefCell;
use std::time::Duration;

use wshost_guest::{
    Connection, Controller, Lifecycle, Message, ServerParams, Timer, broadcast_text, set_timer,
};

const VERSION: &str = if cfg!(feature = "v2") { "v2" } else { "v1" };

struct Probe;

#[derive(Default)]
struct State {
    events: Vec<String>,
    count: u64,
    params: String,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn record(event: String) {
    STATE.with_borrow_mut(|s| s.events.push(event));
}

impl Controller for Probe {
    fn on_open(conn: Connection) {
        record(format!("open {}", conn.id()));
    }

    fn on_message(conn: Connection, msg: Message) {
        let Message::Text(text) = msg else { return };
        let (command, rest) = text.split_once(' ').unwrap_or((text.as_str(), ""));
        let reply = match command {
            "events" => STATE.with_borrow(|s| s.events.join(";")),
            "params" => STATE.with_borrow(|s| s.params.clone()),
            "timer" => {
                let (ms, mode) = rest.split_once(' ').unwrap_or((rest, "once"));
                let delay = Duration::from_millis(ms.parse().unwrap_or(0));
                match set_timer(delay, mode == "repeat") {
                    Ok(timer) => format!("timer {}", timer.id()),
                    Err(why) => format!("timer error {why}"),
                }
            }
            "timers" => {
                // `timers N MS`: sets N one-shot timers of MS; stops at the first error.
                let (n, ms) = rest.split_once(' ').unwrap_or((rest, "60000"));
                let delay = Duration::from_millis(ms.parse().unwrap_or(60_000));
                let n: u64 = n.parse().unwrap_or(0);
                let mut set = 0;
                let mut error = None;
                while set < n {
                    match set_timer(delay, false) {
                        Ok(_) => set += 1,
                        Err(why) => {
                            error = Some(why);
                            break;
                        }
                    }
                }
                match error {
                    None => format!("timers {set}"),
                    Some(why) => format!("timers {set} error {why}"),
                }
            }
            "cancel" => {
                let id = rest.parse().unwrap_or(0);
                format!("cancelled {}", Timer::from_id(id).cancel())
            }
            "count" => STATE
                .with_borrow_mut(|s| {
                    s.count += 1;
                    s.count
                })
                .to_string(),
            "panic" => panic!("lifecycle probe asked to panic"),
            _ => format!("{VERSION}:{text}"),
        };
        let _ = conn.send_text(&reply);
    }

    fn on_close(conn: Connection, code: u16, _reason: String) {
        record(format!("close {} {code}", conn.id()));
    }
}

impl Lifecycle for Probe {
    fn init(config: Vec<(String, String)>, params: ServerParams) -> Result<(), String> {
        if cfg!(feature = "bad-init") {
            return Err("this build refuses to start".to_owned());
        }
        if cfg!(feature = "trap-init") {
            panic!("this build traps in init");
        }
        let config: Vec<String> = config.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let routes: Vec<String> = params
            .routes
            .iter()
            .map(|(n, p)| format!("{n}:{p}"))
            .collect();
        STATE.with_borrow_mut(|s| {
            s.params = format!(
                "listen={} version={} controller={} routes={}",
                params.listen,
                params.version,
                params.controller,
                routes.join(",")
            );
        });
        record(format!("init {}", config.join(",")));
        Ok(())
    }

    fn on_first_open(conn: Connection) {
        record(format!("first-open {}", conn.id()));
    }

    fn on_last_close(conn: Connection) {
        record(format!("last-close {}", conn.id()));
    }

    fn on_shutdown() {
        record("shutdown".to_owned());
        broadcast_text("shutdown", None);
    }

    fn on_timer(timer: Timer) {
        broadcast_text(&format!("fired {}", timer.id()), None);
    }

    fn snapshot() -> Vec<u8> {
        STATE.with_borrow(|s| s.count.to_le_bytes().to_vec())
    }

    fn restore(state: Vec<u8>) -> Result<(), String> {
        let bytes: [u8; 8] = state.try_into().map_err(|_| "bad state".to_owned())?;
        STATE.with_borrow_mut(|s| s.count = u64::from_le_bytes(bytes));
        Ok(())
    }
}

wshost_guest::export!(Probe, lifecycle);
