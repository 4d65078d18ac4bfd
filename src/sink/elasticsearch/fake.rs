//! A loopback Elasticsearch for what the local server cannot show (osmem makes every write
//! searchable at once, and has no tasks API): near-real-time search, where writes stay invisible
//! to `_delete_by_query` and `_reindex` until the index is refreshed; server-side tasks that run
//! for a while; a request that times out at a proxy while its work goes on; scripted failures.
//! It speaks plain HTTP/1.1 on 127.0.0.1, enough for the client's requests.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
pub struct Index {
    /// What searches (and so `_delete_by_query` and `_reindex`) see.
    pub searchable: BTreeMap<String, Value>,
    /// Written, acknowledged, not yet refreshed.
    pub unrefreshed: BTreeMap<String, Value>,
}

impl Index {
    pub fn len(&self) -> usize {
        self.searchable.len() + self.unrefreshed.len()
    }
}

pub struct Task {
    polls_left: u32,
    result: Value,
}

#[derive(Default)]
pub struct State {
    pub indices: BTreeMap<String, Index>,
    /// Every request, as "METHOD /path?query".
    pub requests: Vec<String>,
    /// Whether `GET /_tasks…` is served (osmem answers 400 "no handler found").
    pub tasks_api: bool,
    /// Polls a task answers "running" before it reports its result.
    pub task_polls: u32,
    /// A `_reindex` or `_delete_by_query` waited for in the request does its work, but the
    /// request ends in a 504 first (a proxy's timeout), as a long one does.
    pub slow_requests: bool,
    /// The next requests whose "METHOD /path" starts with the prefix get this status instead
    /// (0: this one is served).
    pub failures: VecDeque<(String, u16)>,
    pub tasks: BTreeMap<String, Task>,
}

impl State {
    pub fn count(&self, prefix: &str) -> usize {
        self.requests.iter().filter(|r| r.starts_with(prefix)).count()
    }
}

pub struct FakeEs {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeEs {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeEs {
    pub async fn start(state: State) -> FakeEs {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        let server = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, shared.clone()));
            }
        });
        FakeEs { url, state, server }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake state")
    }
}

/// Requests of one connection, one after the other (keep-alive).
async fn serve(socket: TcpStream, state: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(socket);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let (status, reply) = handle(&mut state.lock().expect("fake state"), &method, &target, &body);
        let text = if method == "HEAD" { String::new() } else { reply.to_string() };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nx-elastic-product: Elasticsearch\r\ncontent-length: {}\r\n\r\n",
            if method == "HEAD" { 0 } else { text.len() }
        );
        if reader.get_mut().write_all(format!("{head}{text}").as_bytes()).await.is_err() {
            return;
        }
    }
}

fn error(status: u16, kind: &str) -> (u16, Value) {
    (status, json!({ "error": { "type": kind, "reason": kind }, "status": status }))
}

fn handle(state: &mut State, method: &str, target: &str, body: &[u8]) -> (u16, Value) {
    state.requests.push(format!("{method} {target}"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = format!("{method} {path}");
    if let Some(i) = state.failures.iter().position(|(prefix, _)| request.starts_with(prefix.as_str())) {
        let (_, status) = state.failures.remove(i).expect("found");
        if status != 0 {
            return error(status, "injected");
        }
    }
    let background = query.contains("wait_for_completion=false");
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", [""]) => (200, json!({ "version": { "number": "8.15.0" } })),
        ("POST", ["_bulk"]) => (200, bulk(state, body)),
        ("POST", ["_reindex"]) => {
            let request: Value = serde_json::from_slice(body).unwrap_or_default();
            let (from, to) = (request["source"]["index"].as_str().unwrap_or(""), request["dest"]["index"].as_str().unwrap_or(""));
            let result = reindex(state, from, to);
            finish(state, result, background)
        }
        ("GET", ["_tasks", ..]) if !state.tasks_api => error(400, "no handler found"),
        ("GET", ["_tasks"]) => (200, json!({ "nodes": {} })),
        ("GET", ["_tasks", id]) => poll(state, id),
        ("HEAD", [index]) => (if state.indices.contains_key(*index) { 200 } else { 404 }, json!({})),
        ("PUT", [index]) => {
            state.indices.entry(index.to_string()).or_default();
            (200, json!({ "acknowledged": true }))
        }
        ("POST", ["_aliases"]) => (200, json!({ "acknowledged": true })),
        ("POST", [index, "_refresh"]) => match state.indices.get_mut(*index) {
            None => error(404, "index_not_found_exception"),
            Some(i) => {
                let written = std::mem::take(&mut i.unrefreshed);
                i.searchable.extend(written);
                (200, json!({ "_shards": { "failed": 0 } }))
            }
        },
        ("POST", [index, "_delete_by_query"]) => match state.indices.get_mut(*index) {
            None => error(404, "index_not_found_exception"),
            Some(i) => {
                let deleted = std::mem::take(&mut i.searchable).len();
                finish(state, json!({ "deleted": deleted, "failures": [] }), background)
            }
        },
        _ => error(400, "no handler found"),
    }
}

/// The reply to a `_reindex` or `_delete_by_query`: a task to poll, a proxy's 504, or the result.
fn finish(state: &mut State, result: Value, background: bool) -> (u16, Value) {
    if background {
        let id = format!("fake:{}", state.tasks.len() + 1);
        state.tasks.insert(id.clone(), Task { polls_left: state.task_polls, result });
        return (200, json!({ "task": id }));
    }
    if state.slow_requests {
        return error(504, "gateway_timeout");
    }
    (200, result)
}

fn poll(state: &mut State, id: &str) -> (u16, Value) {
    let Some(task) = state.tasks.get_mut(id) else { return error(404, "resource_not_found_exception") };
    if task.polls_left > 0 {
        task.polls_left -= 1;
        return (200, json!({ "completed": false, "task": { "id": id } }));
    }
    (200, json!({ "completed": true, "task": { "id": id }, "response": task.result.clone() }))
}

fn reindex(state: &mut State, from: &str, to: &str) -> Value {
    let Some(source) = state.indices.get(from) else {
        return json!({ "error": { "type": "index_not_found_exception", "reason": format!("no such index [{from}]") } });
    };
    let copied = source.searchable.clone();
    let created = copied.len();
    state.indices.entry(to.to_string()).or_default().unrefreshed.extend(copied);
    json!({ "created": created, "failures": [] })
}

fn bulk(state: &mut State, body: &[u8]) -> Value {
    let text = String::from_utf8_lossy(body);
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let mut items = Vec::new();
    while let Some(action) = lines.next() {
        let action: Value = serde_json::from_str(action).unwrap_or_default();
        let (op, meta) = action.as_object().and_then(|o| o.iter().next()).map(|(k, v)| (k.clone(), v.clone())).unwrap_or_default();
        let (index, id) = (meta["_index"].as_str().unwrap_or("").to_string(), meta["_id"].as_str().unwrap_or("").to_string());
        let target = state.indices.entry(index).or_default();
        if op == "delete" {
            target.searchable.remove(&id);
            target.unrefreshed.remove(&id);
            items.push(json!({ "delete": { "status": 200, "result": "deleted" } }));
        } else {
            let source: Value = serde_json::from_str(lines.next().unwrap_or("{}")).unwrap_or_default();
            target.unrefreshed.insert(id, source);
            items.push(json!({ op: { "status": 201, "result": "created" } }));
        }
    }
    json!({ "errors": false, "items": items })
}
