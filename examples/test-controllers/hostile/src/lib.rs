//! A test-only controller that misbehaves on request, for the sandbox and limits tests:
//! it spins, grows its memory, panics, floods a client, and probes for ambient
//! authority. Not an example to copy.
//!
//! On open it sends `open {id}`. Text commands:
//! - `spin`: tells the other connections `spinning`, then loops forever (until the host's
//!   call deadline interrupts it);
//! - `grow` / `grow {mib}`: allocates 1 MiB blocks and keeps them, forever or until
//!   `mib` MiB, then replies `grew {mib}`;
//! - `panic`: panics;
//! - `flood {count} {bytes}`: sends `count` binary messages of `bytes` bytes to this
//!   connection (each starts with its index as 4 big-endian bytes), then tells the other
//!   connections `flooded {queued} {refused}`;
//! - `count`: replies with the number of binary messages this instance received;
//! - `ambient`: replies with what the sandbox let it see, one `key=value` per line;
//! - anything else is echoed.
//!
//! Binary messages are counted, not echoed. On close it tells the connections left
//! `closed {id} {code} {reason}`.

use std::sync::atomic::{AtomicU64, Ordering};

use wshost_guest::{Connection, Controller, Message, broadcast_text};

/// Binary messages this instance received.
static BINARY: AtomicU64 = AtomicU64::new(0);

/// Memory kept alive by `grow`, so the allocations are not freed.
static HOARD: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

struct Hostile;

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocates (and touches) 1 MiB blocks until `limit` MiB, or forever.
fn grow(limit: Option<usize>) {
    let mut hoard = HOARD.lock().unwrap_or_else(|p| p.into_inner());
    let mut grown = 0;
    while limit.is_none_or(|l| grown < l) {
        hoard.push(vec![0xA5; 1 << 20]);
        grown += 1;
    }
}

fn flood(conn: Connection, count: u32, bytes: usize) {
    let (mut queued, mut refused) = (0u32, 0u32);
    for i in 0..count {
        let mut payload = vec![0u8; bytes.max(4)];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        match conn.send_binary(&payload) {
            Ok(()) => queued += 1,
            Err(_) => refused += 1,
        }
    }
    broadcast_text(&format!("flooded {queued} {refused}"), Some(conn));
}

/// What a guest can reach without being granted anything.
fn ambient() -> String {
    let outcome = |r: Result<String, std::io::Error>| match r {
        Ok(v) => format!("ok:{v}"),
        Err(e) => format!("err:{e}"),
    };
    let lines = [
        format!("env={}", std::env::vars().count()),
        format!("args={}", std::env::args().count()),
        format!(
            "read={}",
            outcome(std::fs::read_to_string("/etc/passwd").map(|s| s.len().to_string()))
        ),
        format!(
            "list={}",
            outcome(std::fs::read_dir("/").map(|d| d.count().to_string()))
        ),
        format!(
            "write={}",
            outcome(std::fs::write("escape.txt", b"x").map(|()| String::new()))
        ),
        format!(
            "connect={}",
            outcome(std::net::TcpStream::connect("127.0.0.1:80").map(|_| String::new()))
        ),
        format!(
            "clock={}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .is_ok()
        ),
    ];
    lines.join("\n")
}

impl Controller for Hostile {
    fn on_open(conn: Connection) {
        let _ = conn.send_text(&format!("open {}", conn.id()));
    }

    fn on_message(conn: Connection, msg: Message) {
        let text = match &msg {
            Message::Text(text) => text.as_str(),
            Message::Binary(_) => {
                BINARY.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let mut words = text.split(' ');
        match words.next().unwrap_or("") {
            "spin" => {
                broadcast_text("spinning", Some(conn));
                spin()
            }
            "grow" => {
                let limit = words.next().and_then(|w| w.parse().ok());
                grow(limit);
                let _ = conn.send_text(&format!("grew {}", limit.unwrap_or(0)));
            }
            "panic" => panic!("hostile asked to panic"),
            "flood" => {
                let count = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let bytes = words.next().and_then(|w| w.parse().ok()).unwrap_or(4);
                flood(conn, count, bytes);
            }
            "count" => {
                let _ = conn.send_text(&BINARY.load(Ordering::Relaxed).to_string());
            }
            "ambient" => {
                let _ = conn.send_text(&ambient());
            }
            _ => {
                let _ = conn.send(&msg);
            }
        }
    }

    fn on_close(conn: Connection, code: u16, reason: String) {
        broadcast_text(&format!("closed {} {code} {reason}", conn.id()), None);
    }
}

wshost_guest::export!(Hostile);
