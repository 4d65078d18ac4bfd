//! The search API over HTTP, on the monitoring server when the `search` option is given:
//!
//! | route | answers |
//! | --- | --- |
//! | `POST /search` | a page (the body is the search request, as `sync.search()` takes it) |
//! | `GET /search/{index}/scroll?cursor=&size=&fields=` | the page a cursor leads to |
//! | `GET /indices` | the indices that may be searched, with health and document counts |
//! | `GET /indices/{index}/fields` | an index's fields (dotted paths) and types |
//! | `GET /health` | 200 when the search server answers, else 503 |
//! | `GET /openapi.json` | the OpenAPI 3 description of these routes |
//!
//! Bad requests get 400 with `{ error, code }` and reach no search; bodies are bounded
//! (`search.maxBodyBytes`, 413 past it); each client address has a token bucket (429 with
//! `Retry-After` when empty); the bearer token, when set, is required as on the other routes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::search::{SearchClient, SearchError, SearchRequest};

/// Client addresses whose buckets are kept; past this, full buckets are forgotten first.
const MAX_CLIENTS: usize = 10_000;

/// The address of the connection a request came on (set per connection by the server).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub IpAddr);

/// Token buckets per client address.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter { per_second, burst: f64::from(burst), buckets: Mutex::default() }
    }

    /// Takes a token for `client`; when there is none, how long until there is.
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("rate lock");
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * per_second < burst);
            if buckets.len() >= MAX_CLIENTS {
                return Err(Duration::from_secs(1));
            }
        }
        let (tokens, at) = buckets.entry(client).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }
}

#[derive(Clone)]
pub struct SearchApp {
    pub client: Arc<SearchClient>,
    pub limiter: Arc<RateLimiter>,
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).expect("search replies serialize");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(e: &SearchError) -> Response {
    let status = match e {
        SearchError::UnknownIndex(_) => StatusCode::NOT_FOUND,
        SearchError::Server(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_REQUEST,
    };
    json_response(status, &json!({ "error": e.to_string(), "code": e.code_str() }))
}

fn bad_request(message: String) -> Response {
    error_response(&SearchError::Input(message))
}

/// 429 with `Retry-After` (whole seconds, at least 1) when the client's bucket is empty.
pub async fn rate_limit(State(app): State<SearchApp>, request: Request, next: Next) -> Response {
    let client = request.extensions().get::<PeerAddr>().map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0);
    if let Err(wait) = app.limiter.take(client, Instant::now()) {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({ "error": format!("too many requests from this client; retry in {seconds} s"), "code": "ERR_RATE_LIMITED" }),
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    next.run(request).await
}

pub async fn search(State(app): State<SearchApp>, body: Bytes) -> Response {
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("the body is not JSON: {e}")),
    };
    match SearchRequest::from_json(value) {
        Ok(request) => respond(app.client.search(request).await),
        Err(e) => error_response(&e),
    }
}

fn respond<T: serde::Serialize>(result: Result<T, SearchError>) -> Response {
    match result {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(e) => error_response(&e),
    }
}

/// The scroll route's query string: `cursor` (required), `size`, `fields` (comma-separated).
fn scroll_request(index: String, query: Option<&str>) -> Result<SearchRequest, SearchError> {
    let mut request = SearchRequest { index: Some(index), ..SearchRequest::default() };
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "cursor" => request.cursor = Some(value.into_owned()),
            "size" => request.size = Some(value.parse().map_err(|_| SearchError::Input(format!("size: \"{value}\" is not a whole number")))?),
            "fields" => request.fields = Some(value.split(',').filter(|f| !f.is_empty()).map(str::to_string).collect()),
            other => return Err(SearchError::Input(format!("unknown query parameter \"{other}\" (expected cursor, size, fields)"))),
        }
    }
    if request.cursor.as_deref().is_none_or(str::is_empty) {
        return Err(SearchError::Input("cursor: required (the meta.nextCursor of the previous page)".into()));
    }
    Ok(request)
}

pub async fn scroll(State(app): State<SearchApp>, Path(index): Path<String>, request: Request) -> Response {
    match scroll_request(index, request.uri().query()) {
        Ok(request) => respond(app.client.search(request).await),
        Err(e) => error_response(&e),
    }
}

pub async fn indices(State(app): State<SearchApp>) -> Response {
    respond(app.client.indices().await)
}

pub async fn fields(State(app): State<SearchApp>, Path(index): Path<String>) -> Response {
    respond(app.client.fields(&index).await)
}

pub async fn health(State(app): State<SearchApp>) -> Response {
    match app.client.ping().await {
        Ok(()) => json_response(StatusCode::OK, &json!({ "status": "ok" })),
        Err(e) => json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({ "status": "unavailable", "error": e.to_string() })),
    }
}

pub async fn openapi() -> Response {
    json_response(StatusCode::OK, &super::openapi::document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_buckets_refill_at_the_rate_and_cap_at_the_burst() {
        let limiter = RateLimiter::new(2.0, 3);
        let (a, b, t0) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]), Instant::now());
        for _ in 0..3 {
            assert_eq!(limiter.take(a, t0), Ok(()));
        }
        assert_eq!(limiter.take(a, t0), Err(Duration::from_millis(500)));
        assert_eq!(limiter.take(b, t0), Ok(()), "another client has its own bucket");
        assert_eq!(limiter.take(a, t0 + Duration::from_millis(500)), Ok(()));
        assert!(limiter.take(a, t0 + Duration::from_millis(500)).is_err());
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limiter.take(a, later), Ok(()));
        }
        assert!(limiter.take(a, later).is_err(), "the bucket holds at most the burst");
    }

    #[test]
    fn scroll_query_strings() {
        let r = scroll_request("i".into(), Some("cursor=abc.def&size=5&fields=a,b.c")).unwrap();
        assert_eq!((r.cursor.as_deref(), r.size, r.fields), (Some("abc.def"), Some(5), Some(vec!["a".to_string(), "b.c".to_string()])));
        assert_eq!(scroll_request("i".into(), Some("size=5")).unwrap_err().to_string(), "cursor: required (the meta.nextCursor of the previous page)");
        assert!(scroll_request("i".into(), Some("cursor=x&size=ten")).unwrap_err().to_string().contains("size: \"ten\""));
        assert!(scroll_request("i".into(), Some("cursor=x&from=3")).unwrap_err().to_string().contains("unknown query parameter \"from\""));
    }
}
