//! Property tests standing in for a fuzzer (cargo-fuzz needs nightly): arbitrary text and
//! mutations of a valid routes.toml through [`Config::parse`]. Each property runs
//! proptest's default 256 cases; for a longer run:
//! `PROPTEST_CASES=100000 cargo test -p wshost --lib fuzz`.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};

use super::*;

/// Uses every table and most keys. No file is read: controllers need not exist yet,
/// and the only filters that read files are not used.
const VALID: &str = r#"listen = "127.0.0.1:9000"
max-header-bytes = 8192
handshake-timeout-ms = 5000
trusted-proxies = ["10.0.0.0/8", "::1"]
[limits]
max-connections = 100
ping-interval-ms = 1000
slow-client = "drop-oldest"
[controllers.echo]
wasm = "build/echo.wasm"
build = "make echo"
watch = ["src"]
[filters.local]
kind = "origin"
allow = ["http://localhost:8080"]
[[filter]]
match = "/admin/*"
kind = "deny"
[[route]]
name = "echo"
match = "/echo/*"
protocols = ["chat", "chat.v2"]
controller = "echo"
filters = ["local", { kind = "rate-limit", max = 5 }]
[route.config]
greeting = "hi"
[route.limits]
memory-bytes = 1048576
call-deadline-ms = 50
[[route]]
controller = "build/other.wasm"
"#;

/// Any key routes.toml knows, in any table, or an unknown one.
fn key() -> impl Strategy<Value = &'static str> {
    let all = TABLES.iter().flat_map(|(_, keys)| keys.split_whitespace());
    select(all.chain(["x", "limits"]).collect::<Vec<_>>())
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<i64>().prop_map(|n| n.to_string()),
        2 => (-2..3i64).prop_map(|n| n.to_string()),
        1 => select(&["18446744073709551615", "9223372036854775807", "1e400", "nan", "-0"][..])
            .prop_map(str::to_owned),
        1 => any::<f64>().prop_map(|n| format!("{n:?}")),
        1 => select(&["true", "\"drop-oldest\"", "\"/[x\"", "\"a.wasm\"", "\"\""][..])
            .prop_map(str::to_owned),
        2 => "\"[ -!#-\\[\\]-~]{0,12}\"",
        1 => "\\[(\"[a-z.:/ ]{0,6}\", ?){0,3}\\]",
        1 => "\\{ ?kind = \"(deny|origin|header|query|rate-limit|authorize)\" ?\\}",
        1 => "\\PC{0,12}",
    ]
}

const LIMITS: &str = "max-connections max-message-bytes max-frame-bytes ping-interval-ms \
    idle-timeout-ms outbound-queue-messages outbound-queue-bytes slow-client \
    call-deadline-ms memory-bytes inbound-queue-messages inbound-queue-bytes max-timers \
    max-handshakes-per-address";

/// Table headers of `VALID` with the keys they take; "" is the top level.
const TABLES: &[(&str, &str)] = &[
    (
        "",
        "listen max-header-bytes handshake-timeout-ms shutdown-timeout-ms trusted-proxies \
         forwarded-header static-dir",
    ),
    ("[limits]", LIMITS),
    ("[route.limits]", LIMITS),
    (
        "[[route]]",
        "name match protocols controller filters config",
    ),
    ("[route.config]", "greeting x"),
    ("[[filter]]", "match kind status body allow"),
    ("[controllers.echo]", "wasm build watch"),
    (
        "[filters.local]",
        "kind allow allow-missing max window-secs ipv6-prefix max-clients",
    ),
];

/// A line someone might write in routes.toml, right or wrong.
fn line() -> impl Strategy<Value = String> {
    // The tables of `VALID`, and some it must not have.
    let wrong = [
        "[controllers.x]",
        "[[route.limits]]",
        "[limits.x]",
        "[route]",
        "[[limits]]",
    ];
    let headers = TABLES
        .iter()
        .map(|(header, _)| *header)
        .filter(|h| !h.is_empty());
    let table = select(headers.chain(wrong).collect::<Vec<_>>()).prop_map(str::to_owned);
    prop_oneof![
        6 => (key(), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        2 => table,
        1 => "\\PC{0,24}",
        1 => Just(String::new()),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    /// Sets a key in one table (the `Index` picks which occurrence of the header).
    Set(&'static str, Index, &'static str, String),
    Drop(Index),
    Duplicate(Index),
    Replace(Index, String),
    Insert(Index, String),
    /// Truncates a line.
    Cut(Index, Index),
}

/// Sets a key of a table, mostly one the table takes.
fn set() -> impl Strategy<Value = Edit> {
    let own_key = any::<Index>();
    (
        select(TABLES),
        any::<Index>(),
        prop::option::weighted(0.9, own_key),
        key(),
        value(),
    )
        .prop_map(|((table, keys), which, own, other, value)| {
            let keys: Vec<&'static str> = keys.split_whitespace().collect();
            let key = own.map_or(other, |k| keys[k.index(keys.len())]);
            Edit::Set(table, which, key, value)
        })
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        5 => set(),
        1 => any::<Index>().prop_map(Edit::Drop),
        1 => any::<Index>().prop_map(Edit::Duplicate),
        1 => (any::<Index>(), line()).prop_map(|(i, l)| Edit::Replace(i, l)),
        1 => (any::<Index>(), line()).prop_map(|(i, l)| Edit::Insert(i, l)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(i, at)| Edit::Cut(i, at)),
    ]
}

/// `VALID` with `edits` applied to its lines.
fn mutate(edits: &[Edit], crlf: bool) -> String {
    let mut lines: Vec<String> = VALID.lines().map(str::to_owned).collect();
    for edit in edits {
        let n = lines.len();
        match edit {
            Edit::Set(table, which, key, value) => {
                let headers: Vec<usize> = (0..n).filter(|&i| lines[i] == *table).collect();
                let start = match (table.is_empty(), headers.len()) {
                    (true, _) => 0,
                    (false, 0) => continue,
                    (false, count) => headers[which.index(count)] + 1,
                };
                let end = (start..n).find(|&i| lines[i].starts_with('[')).unwrap_or(n);
                let new = format!("{key} = {value}");
                let prefix = format!("{key} =");
                match (start..end).find(|&i| lines[i].starts_with(&prefix)) {
                    Some(i) => lines[i] = new,
                    None => lines.insert(start, new),
                }
            }
            Edit::Drop(i) if n > 0 => drop(lines.remove(i.index(n))),
            Edit::Duplicate(i) if n > 0 => lines.insert(i.index(n), lines[i.index(n)].clone()),
            Edit::Replace(i, l) if n > 0 => lines[i.index(n)] = l.clone(),
            Edit::Insert(i, l) => lines.insert(i.index(n + 1), l.clone()),
            Edit::Cut(i, at) if n > 0 => {
                let line = &mut lines[i.index(n)];
                let cut = at.index(line.len() + 1);
                let cut = (0..=cut)
                    .rev()
                    .find(|&c| line.is_char_boundary(c))
                    .unwrap_or(0);
                line.truncate(cut);
            }
            _ => {}
        }
    }
    lines.join(if crlf { "\r\n" } else { "\n" })
}

/// What `Config::parse` promises for any text: no panic, and an error that points
/// into the text and says something.
fn check_parse(text: &str) -> Result<(), TestCaseError> {
    let path = Path::new("/srv/app/routes.toml");
    let error = match Config::parse(path, text) {
        Ok(config) => {
            prop_assert!(!config.routes.is_empty());
            for route in &config.routes {
                prop_assert!(route.controller < config.controllers.len());
                prop_assert!(route.limits.max_frame_bytes <= route.limits.max_message_bytes);
            }
            return Ok(());
        }
        Err(error) => error,
    };
    let shown = error.to_string();
    let ConfigError::Invalid {
        line,
        column,
        message,
        ..
    } = error
    else {
        return Err(TestCaseError::fail(format!("parse read a file: {shown}")));
    };
    let lines = text.lines().count();
    prop_assert!(
        (1..=lines + 1).contains(&line),
        "line {line} of {lines}: {shown}"
    );
    prop_assert!(column >= 1);
    prop_assert!(!message.trim().is_empty(), "{shown}");
    Ok(())
}

#[test]
fn the_base_file_is_valid() {
    let config = Config::parse(Path::new("/srv/app/routes.toml"), VALID).unwrap();
    assert_eq!(config.routes.len(), 2);
    assert_eq!(config.filters.len(), 1);
    assert_eq!(config.max_connections, 100);
}

proptest! {
    #[test]
    fn parse_survives_arbitrary_text(text in any::<String>(), tomlish in "[a-z\\[\\]=\"'{}, .\n#-]{0,64}") {
        check_parse(&text)?;
        check_parse(&tomlish)?;
    }

    #[test]
    fn parse_survives_any_value_in_any_table(edits in vec(set(), 1..4)) {
        check_parse(&mutate(&edits, false))?;
    }

    #[test]
    fn parse_survives_edited_routes_files(edits in vec(edit(), 1..6), crlf in prop::bool::weighted(0.2)) {
        check_parse(&mutate(&edits, crlf))?;
    }
}
