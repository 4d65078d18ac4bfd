//! The search client: requests to the search server, the index information cache, points in
//! time, and the two ways of paging.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde::Serialize;
use serde_json::{json, Value};

use super::cursor::{expiry, now_ms, CursorSigner, CursorState};
use super::error::{SearchError, SearchResult};
use super::mapping::{FieldInfo, Fields};
use super::model::{PageLimits, SearchRequest};
use super::query::{build_query, build_sort, check_source_fields, source_filter, Tiebreaker};
use crate::config::{EsConfig, SearchConfig};
use crate::error::SyncResult;
use crate::event::EventBus;
use crate::sink::elasticsearch::{send_json, JsonReply};

/// Index information older than this is read again (new fields appear as the sync writes).
const INDEX_INFO_TTL: Duration = Duration::from_secs(30);
/// Indices whose information is kept; the cache is emptied when it would grow past this.
const INDEX_INFO_MAX: usize = 256;

/// Which indices may be searched.
#[derive(Clone)]
pub enum IndexScope {
    /// Any index but hidden ones (`.`-prefixed).
    Any,
    /// These names (indices or aliases), read at each request (a sync's grow as it discovers).
    Only(Arc<dyn Fn() -> BTreeSet<String> + Send + Sync>),
}

impl IndexScope {
    pub fn list(names: Vec<String>) -> Self {
        let names: BTreeSet<String> = names.into_iter().collect();
        IndexScope::Only(Arc::new(move || names.clone()))
    }

    fn allows(&self, name: &str, aliases: &[String]) -> bool {
        match self {
            IndexScope::Any => !name.starts_with('.'),
            IndexScope::Only(names) => {
                let names = names();
                names.contains(name) || aliases.iter().any(|a| names.contains(a))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchMeta {
    pub total: u64,
    pub page_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_pages: Option<u64>,
    pub has_next: bool,
    pub has_previous: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    pub selected_fields: Vec<String>,
}

/// A page of documents (`_id` and the selected fields of `_source`) and what it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResponse {
    pub data: Vec<Value>,
    pub meta: SearchMeta,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexSummary {
    pub index: String,
    pub aliases: Vec<String>,
    pub health: String,
    pub status: String,
    pub docs_count: u64,
}

struct IndexInfo {
    fields: Fields,
    max_result_window: u64,
    read_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PitApi {
    /// `POST /<index>/_pit`, `DELETE /_pit`.
    Elastic,
    /// `POST /<index>/_search/point_in_time`, `DELETE /_search/point_in_time`.
    OpenSearch,
}

pub struct SearchClient {
    client: Elasticsearch,
    signer: CursorSigner,
    config: SearchConfig,
    scope: IndexScope,
    cache: Mutex<HashMap<String, Arc<IndexInfo>>>,
    pit_api: tokio::sync::OnceCell<PitApi>,
    /// Set once the server refused to open a point in time: cursors then page the live index.
    no_pit: AtomicBool,
}

impl SearchClient {
    /// A client of the server `es` describes (the same options, TLS and auth, as the sync's).
    pub fn new(es: &EsConfig, config: SearchConfig, scope: IndexScope, events: &EventBus) -> SyncResult<Self> {
        let (client, _) = crate::sink::elasticsearch::build_client(es, events)?;
        let signer = CursorSigner::new(config.cursor_secret.as_ref());
        Ok(SearchClient { client, signer, config, scope, cache: Mutex::default(), pit_api: Default::default(), no_pit: AtomicBool::new(false) })
    }

    pub fn page_limits(&self) -> PageLimits {
        PageLimits { default_size: self.config.default_page_size, max_size: self.config.max_page_size }
    }

    pub fn config(&self) -> &SearchConfig {
        &self.config
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> SearchResult<JsonReply> {
        send_json(&self.client, method, path, &[], body).await.map_err(SearchError::Server)
    }

    /// A reply that must be a success; `index` names a missing index in the error.
    async fn expect(&self, method: Method, path: &str, body: Option<&Value>, index: Option<&str>) -> SearchResult<Value> {
        let reply = self.send(method, path, body).await?;
        if reply.ok() {
            return Ok(reply.body);
        }
        Err(match (index, reply.error_type()) {
            (Some(index), "index_not_found_exception") => SearchError::UnknownIndex(index.to_string()),
            _ => SearchError::Server(reply.reason()),
        })
    }

    /// Refuses indices outside the scope (aliases count for the indices behind them).
    fn check_scope(&self, index: &str) -> SearchResult<()> {
        if self.scope.allows(index, &[]) {
            Ok(())
        } else {
            Err(SearchError::UnknownIndex(index.to_string()))
        }
    }

    async fn index_info(&self, index: &str, refresh: bool) -> SearchResult<Arc<IndexInfo>> {
        let cached = self.cache.lock().expect("cache lock").get(index).cloned();
        if let Some(info) = cached.filter(|i| i.read_at.elapsed() < INDEX_INFO_TTL && !(refresh && i.read_at.elapsed() > Duration::from_secs(1))) {
            return Ok(info);
        }
        let settings_path = format!("/{index}/_settings/index.max_result_window?include_defaults=true&flat_settings=true");
        let mapping_path = format!("/{index}/_mapping");
        let (mapping, settings) =
            futures::join!(self.expect(Method::Get, &mapping_path, None, Some(index)), self.expect(Method::Get, &settings_path, None, Some(index)));
        let max_result_window = settings?
            .as_object()
            .into_iter()
            .flat_map(|o| o.values())
            .filter_map(|i| i.pointer("/settings/index.max_result_window").or_else(|| i.pointer("/defaults/index.max_result_window")))
            .filter_map(|v| v.as_str().and_then(|s| s.parse::<u64>().ok()).or_else(|| v.as_u64()))
            .min()
            .unwrap_or(10_000);
        let info = Arc::new(IndexInfo { fields: Fields::from_mapping_reply(&mapping?), max_result_window, read_at: Instant::now() });
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= INDEX_INFO_MAX {
            cache.clear();
        }
        cache.insert(index.to_string(), info.clone());
        Ok(info)
    }

    /// Whether the search server answers (and accepts the credentials).
    pub async fn ping(&self) -> SearchResult<()> {
        self.expect(Method::Get, "/", None, None).await.map(drop)
    }

    /// The fields of `index` from its mapping, with dotted paths and their types.
    pub async fn fields(&self, index: &str) -> SearchResult<Vec<FieldInfo>> {
        super::model::check_index_name(index)?;
        self.check_scope(index)?;
        Ok(self.index_info(index, true).await?.fields.list())
    }

    /// The searchable indices, with their aliases, health and document counts.
    pub async fn indices(&self) -> SearchResult<Vec<IndexSummary>> {
        let (indices, aliases) = futures::join!(
            self.expect(Method::Get, "/_cat/indices?format=json&h=index,health,status,docs.count", None, None),
            self.expect(Method::Get, "/_cat/aliases?format=json&h=alias,index", None, None)
        );
        let mut by_index: HashMap<String, Vec<String>> = HashMap::new();
        for row in aliases?.as_array().into_iter().flatten() {
            if let (Some(alias), Some(index)) = (row["alias"].as_str(), row["index"].as_str()) {
                by_index.entry(index.to_string()).or_default().push(alias.to_string());
            }
        }
        let text = |row: &Value, key: &str| row[key].as_str().unwrap_or_default().to_string();
        let mut out: Vec<IndexSummary> = indices?
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                let index = text(row, "index");
                let mut aliases = by_index.remove(&index).unwrap_or_default();
                aliases.sort();
                let docs_count = row["docs.count"].as_str().and_then(|s| s.parse().ok()).or_else(|| row["docs.count"].as_u64()).unwrap_or(0);
                IndexSummary { aliases, health: text(row, "health"), status: text(row, "status"), docs_count, index }
            })
            .filter(|s| self.scope.allows(&s.index, &s.aliases))
            .collect();
        out.sort_by(|a, b| a.index.cmp(&b.index));
        Ok(out)
    }

    /// One page of a search: offset paging with `page`, else cursor paging.
    pub async fn search(&self, request: SearchRequest) -> SearchResult<SearchResponse> {
        request.check(self.page_limits())?;
        if let Some(cursor) = &request.cursor {
            let state = self.signer.open(cursor, now_ms())?;
            if request.index.as_ref().is_some_and(|i| *i != state.index) {
                return Err(SearchError::input(format!("index: the cursor is for \"{}\", not \"{}\"", state.index, request.index.unwrap_or_default())));
            }
            return self.next_page(state, &request).await;
        }
        let index = request.index.clone().expect("checked: index or cursor");
        self.check_scope(&index)?;
        let mut info = self.index_info(&index, false).await?;
        let built = match Built::new(&request, &info.fields) {
            Err(SearchError::Input(m)) if m.contains("unknown field") => {
                // A field the sync added since the mapping was read: read it again once.
                info = self.index_info(&index, true).await?;
                Built::new(&request, &info.fields)?
            }
            other => other?,
        };
        match request.page {
            Some(page) => self.offset_page(&index, &info, built, &request, page).await,
            None => self.first_cursor_page(&index, &info, built, &request).await,
        }
    }
}

/// The parts of the server query a request makes, checked against the index's fields.
struct Built {
    query: Value,
    sort: Vec<Value>,
    fields: Option<Vec<String>>,
    exclude: Vec<String>,
}

impl Built {
    fn new(request: &SearchRequest, fields: &Fields) -> SearchResult<Built> {
        let query = build_query(&request.conditions()?, fields)?;
        let sort = build_sort(request.sort.as_deref().unwrap_or_default(), fields)?;
        let (includes, excludes) = (request.fields.clone(), request.exclude.clone().unwrap_or_default());
        check_source_fields("fields", includes.as_deref().unwrap_or_default(), fields)?;
        check_source_fields("exclude", &excludes, fields)?;
        Ok(Built { query, sort, fields: includes, exclude: excludes })
    }
}

/// A hit as a document: `_id` first, then its (filtered) `_source`.
fn document(hit: &Value) -> Value {
    let mut doc = serde_json::Map::new();
    doc.insert("_id".into(), hit["_id"].clone());
    if let Some(source) = hit["_source"].as_object() {
        doc.extend(source.iter().filter(|(k, _)| *k != "_id").map(|(k, v)| (k.clone(), v.clone())));
    }
    Value::Object(doc)
}

fn hits_of(reply: &Value) -> SearchResult<(&Vec<Value>, u64)> {
    let hits = reply.pointer("/hits/hits").and_then(Value::as_array).ok_or_else(|| SearchError::Server("the search reply has no hits".into()))?;
    let total = reply.pointer("/hits/total/value").or_else(|| reply.pointer("/hits/total")).and_then(Value::as_u64).unwrap_or(0);
    Ok((hits, total))
}

impl SearchClient {
    async fn offset_page(&self, index: &str, info: &IndexInfo, built: Built, request: &SearchRequest, page: u64) -> SearchResult<SearchResponse> {
        let size = request.size.unwrap_or(self.config.default_page_size);
        let from = (page - 1).saturating_mul(size);
        if from.saturating_add(size) > info.max_result_window {
            return Err(SearchError::input(format!(
                "page: page {page} of {size} reaches result {}, past index.max_result_window ({}) of \"{index}\"; page through with a cursor instead (omit page, then pass meta.nextCursor)",
                from.saturating_add(size),
                info.max_result_window
            )));
        }
        // Elasticsearch refuses to sort on `_id` (OpenSearch and the servers without points in
        // time, where cursors fall back to it, allow it).
        let tiebreaker = if self.pit_api().await? == PitApi::Elastic { Tiebreaker::Doc } else { Tiebreaker::Id };
        let mut sort = built.sort;
        sort.push(tiebreaker.clause());
        let body = json!({
            "query": built.query, "sort": sort, "from": from, "size": size,
            "_source": source_filter(built.fields.as_deref(), &built.exclude), "track_total_hits": true
        });
        let reply = self.search_request(&format!("/{index}/_search"), &body, index).await?;
        let (hits, total) = hits_of(&reply)?;
        let meta = SearchMeta {
            total,
            page_size: size,
            page: Some(page),
            total_pages: Some(total.div_ceil(size)),
            has_next: from + size < total,
            has_previous: page > 1,
            next_cursor: None,
            selected_fields: info.fields.selected(built.fields.as_deref(), &built.exclude),
        };
        Ok(SearchResponse { data: hits.iter().map(document).collect(), meta })
    }

    async fn search_request(&self, path: &str, body: &Value, index: &str) -> SearchResult<Value> {
        let pit = body.get("pit");
        let reply = self.send(Method::Post, path, Some(body)).await?;
        if reply.ok() {
            return Ok(reply.body);
        }
        let kind = reply.error_type().to_string();
        let reason = reply.reason();
        Err(match kind.as_str() {
            "index_not_found_exception" => SearchError::UnknownIndex(index.to_string()),
            _ if pit.is_some() && (reply.status == 404 || kind == "search_context_missing_exception") => SearchError::PitGone,
            _ if reply.status == 400 => SearchError::Refused(reason),
            _ => SearchError::Server(reason),
        })
    }

    async fn pit_api(&self) -> SearchResult<PitApi> {
        self.pit_api
            .get_or_try_init(|| async {
                let info = self.expect(Method::Get, "/", None, None).await?;
                let opensearch = info.pointer("/version/distribution").and_then(Value::as_str) == Some("opensearch");
                Ok(if opensearch { PitApi::OpenSearch } else { PitApi::Elastic })
            })
            .await
            .copied()
    }

    fn keep_alive(&self) -> String {
        format!("{}s", self.config.cursor_ttl.as_secs().max(1))
    }

    /// Opens a point in time on `index`; none where the server has none (remembered).
    async fn open_pit(&self, index: &str) -> SearchResult<Option<String>> {
        if self.no_pit.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let api = self.pit_api().await?;
        let (path, key) = match api {
            PitApi::Elastic => (format!("/{index}/_pit?keep_alive={}", self.keep_alive()), "id"),
            PitApi::OpenSearch => (format!("/{index}/_search/point_in_time?keep_alive={}", self.keep_alive()), "pit_id"),
        };
        let reply = self.send(Method::Post, &path, None).await?;
        match (reply.ok(), reply.error_type()) {
            (true, _) => Ok(reply.body[key].as_str().map(str::to_string)),
            (false, "index_not_found_exception") => Err(SearchError::UnknownIndex(index.to_string())),
            (false, _) if matches!(reply.status, 400 | 404 | 405 | 501) => {
                tracing::warn!("the search server has no point in time ({}): cursors page the live index", reply.reason());
                self.no_pit.store(true, Ordering::Relaxed);
                Ok(None)
            }
            (false, _) => Err(SearchError::Server(reply.reason())),
        }
    }

    /// Closes a point in time the last page was read from (best effort: it expires anyway).
    async fn close_pit(&self, pit: &str) {
        let (path, body) = match self.pit_api().await {
            Ok(PitApi::Elastic) => ("/_pit", json!({ "id": pit })),
            Ok(PitApi::OpenSearch) => ("/_search/point_in_time", json!({ "pit_id": [pit] })),
            Err(_) => return,
        };
        if let Err(e) = self.send(Method::Delete, path, Some(&body)).await {
            tracing::debug!("closing a point in time failed: {e}");
        }
    }

    async fn first_cursor_page(&self, index: &str, info: &IndexInfo, built: Built, request: &SearchRequest) -> SearchResult<SearchResponse> {
        let size = request.size.unwrap_or(self.config.default_page_size);
        // A page reads one more document than it returns (to tell whether another follows).
        if size >= info.max_result_window {
            return Err(SearchError::input(format!(
                "size: at most {} for \"{index}\" (its index.max_result_window is {})",
                info.max_result_window - 1,
                info.max_result_window
            )));
        }
        let pit = self.open_pit(index).await?;
        let mut sort = built.sort;
        sort.push(if pit.is_some() { Tiebreaker::ShardDoc } else { Tiebreaker::Id }.clause());
        let state = CursorState {
            index: index.to_string(),
            query: built.query,
            sort,
            after: Vec::new(),
            pit,
            fields: built.fields,
            exclude: built.exclude,
            size,
            page: 1,
            expires_ms: 0,
        };
        let selected = info.fields.selected(state.fields.as_deref(), &state.exclude);
        self.cursor_page(state, selected).await
    }

    async fn next_page(&self, mut state: CursorState, request: &SearchRequest) -> SearchResult<SearchResponse> {
        if let Some(size) = request.size {
            state.size = size;
        }
        if request.fields.is_some() || request.exclude.is_some() {
            state.fields = request.fields.clone();
            state.exclude = request.exclude.clone().unwrap_or_default();
        }
        self.check_scope(&state.index)?;
        let info = self.index_info(&state.index, false).await?;
        if state.size >= info.max_result_window {
            return Err(SearchError::input(format!("size: at most {} for \"{}\"", info.max_result_window - 1, state.index)));
        }
        check_source_fields("fields", state.fields.as_deref().unwrap_or_default(), &info.fields)?;
        check_source_fields("exclude", &state.exclude, &info.fields)?;
        let selected = info.fields.selected(state.fields.as_deref(), &state.exclude);
        self.cursor_page(state, selected).await
    }

    /// Reads the page `state` leads to; one more document than the page tells whether another follows.
    async fn cursor_page(&self, mut state: CursorState, selected: Vec<String>) -> SearchResult<SearchResponse> {
        let mut body = json!({
            "query": state.query, "sort": state.sort, "size": state.size + 1,
            "_source": source_filter(state.fields.as_deref(), &state.exclude), "track_total_hits": true
        });
        if !state.after.is_empty() {
            body["search_after"] = json!(state.after);
        }
        let path = match &state.pit {
            Some(pit) => {
                body["pit"] = json!({ "id": pit, "keep_alive": self.keep_alive() });
                "/_search".to_string()
            }
            None => format!("/{}/_search", state.index),
        };
        let reply = self.search_request(&path, &body, &state.index).await?;
        let (hits, total) = hits_of(&reply)?;
        let has_next = hits.len() as u64 > state.size;
        let page_hits = &hits[..hits.len().min(state.size as usize)];
        if let Some(pit) = reply.get("pit_id").and_then(Value::as_str) {
            state.pit = Some(pit.to_string());
        }
        let page = state.page;
        let next_cursor = match (has_next, page_hits.last()) {
            (true, Some(last)) => {
                state.after = last["sort"].as_array().cloned().ok_or_else(|| SearchError::Server("a hit has no sort values".into()))?;
                state.page += 1;
                state.expires_ms = expiry(self.config.cursor_ttl);
                Some(self.signer.sign(&state))
            }
            _ => {
                if let Some(pit) = &state.pit {
                    self.close_pit(pit).await;
                }
                None
            }
        };
        let meta = SearchMeta {
            total,
            page_size: state.size,
            page: Some(page),
            total_pages: None,
            has_next,
            has_previous: page > 1,
            next_cursor,
            selected_fields: selected,
        };
        Ok(SearchResponse { data: page_hits.iter().map(document).collect(), meta })
    }
}
