//! Operations over a whole index (`_reindex`, `_delete_by_query`), which can run for long: they
//! act on what a refresh made searchable, run as server-side tasks that are polled (a request
//! that timed out is never sent again while its first run goes on), and report the failures of
//! their documents.

use std::sync::OnceLock;
use std::time::Duration;

use elasticsearch::http::Method;
use serde_json::Value;

use super::error::EsError;
use super::response::{snippet, Reply};
use super::retry::answer;
use super::service::{expect_success, EsResult, EsSink};
use crate::retry::{proceed, Attempt, Flow, Retryable};

/// Whether the server offers the tasks API (osmem does not; a user without the `monitor`
/// privilege cannot use it), found out once.
pub type TasksApi = OnceLock<bool>;

/// Longest pause between two polls of a running task.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(5);

impl EsSink {
    /// Makes every acknowledged write of `index` searchable, so that an operation over the
    /// searchable documents sees them all; a missing index is fine.
    pub(super) async fn refresh(&self, index: &str) -> EsResult<Flow<()>> {
        let what = format!("refresh \"{index}\"");
        self.send_expecting(&what, Method::Post, &format!("/{index}/_refresh"), None, &[404]).await.map(|flow| flow.map(drop))
    }

    /// Runs `POST path` (a `_reindex` or `_delete_by_query`) to its end and checks the failures
    /// it reports. A missing index (404) is nothing to do.
    pub(super) async fn run_task(&self, what: &str, path: &str, body: &[u8]) -> EsResult<Flow<()>> {
        let result = if proceed!(self.has_tasks_api().await?) {
            proceed!(self.policy().run(what, TaskRun { sink: self, what, path, body, task: None }).await?)
        } else {
            let reply = proceed!(self.send(what, Method::Post, path, Some(body)).await?);
            expect_success(&reply, what, &[404])?;
            (reply.status != 404).then(|| serde_json::from_slice(&reply.body).unwrap_or_default())
        };
        let failures = result.as_ref().and_then(|r| r.get("failures")).and_then(Value::as_array).map_or(0, Vec::len);
        if failures > 0 {
            let detail = snippet(result.map(|r| r["failures"].to_string()).unwrap_or_default().as_bytes());
            return Err(EsError::TaskFailed { what: what.to_string(), count: failures, detail });
        }
        Ok(Flow::Done(()))
    }

    async fn has_tasks_api(&self) -> EsResult<Flow<bool>> {
        if let Some(known) = self.tasks_api().get() {
            return Ok(Flow::Done(*known));
        }
        let probe = proceed!(self.send("check the tasks API", Method::Get, "/_tasks?actions=indices:data/write/reindex&detailed=false", None).await?);
        Ok(Flow::Done(*self.tasks_api().get_or_init(|| probe.is_success())))
    }
}

/// One run of a task: submitted once, then polled until it ends. A failed poll is retried
/// without sending the task again; only a task that vanished (its node restarted) goes again.
struct TaskRun<'a> {
    sink: &'a EsSink,
    what: &'a str,
    path: &'a str,
    body: &'a [u8],
    /// The id of the submitted task, once the server took it.
    task: Option<String>,
}

impl Retryable for TaskRun<'_> {
    /// The task's response; none when its index is missing.
    type Output = Option<Value>;
    type Error = EsError;

    async fn attempt(&mut self) -> Attempt<Option<Value>, EsError> {
        if self.task.is_none() {
            let path = format!("{}{}wait_for_completion=false", self.path, if self.path.contains('?') { '&' } else { '?' });
            let reply = match answer(self.sink.request(Method::Post, &path, Some(self.body.to_vec()), false).await) {
                Ok(reply) if reply.status == 404 => return Attempt::Done(None),
                Ok(reply) => reply,
                Err(transient) => return Attempt::Retry(transient.to_string()),
            };
            match submitted_task(&reply, self.what) {
                Ok(task) => self.task = Some(task),
                Err(e) => return Attempt::Fail(e),
            }
        }
        self.poll().await
    }
}

impl TaskRun<'_> {
    async fn poll(&mut self) -> Attempt<Option<Value>, EsError> {
        let task = self.task.clone().expect("submitted");
        let mut interval = Duration::from_millis(100);
        let mut polled = false;
        loop {
            let reply = match answer(self.sink.request(Method::Get, &format!("/_tasks/{task}"), None, false).await) {
                Ok(reply) => reply,
                // A poll that got an answer before shows the task alive: progress.
                Err(transient) if polled => return Attempt::Partial(format!("polling task {task}: {transient}")),
                Err(transient) => return Attempt::Retry(format!("polling task {task}: {transient}")),
            };
            if reply.status == 404 {
                self.task = None;
                return Attempt::Retry(format!("task {task} ended without a result, it runs again ({})", reply.describe()));
            }
            if let Err(e) = expect_success(&reply, &format!("{}: poll task {task}", self.what), &[]) {
                return Attempt::Fail(e);
            }
            let status: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            if status["completed"].as_bool() == Some(true) {
                return task_result(self.what, &status);
            }
            polled = true;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.sink.cancelled() => return Attempt::Stopped,
            }
            interval = (interval * 2).min(MAX_POLL_INTERVAL);
        }
    }
}

/// The id in the reply to a task submission.
fn submitted_task(reply: &Reply, what: &str) -> EsResult<String> {
    expect_success(reply, what, &[])?;
    let body: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
    match body["task"].as_str() {
        Some(task) => Ok(task.to_string()),
        None => Err(EsError::BadReply { what: what.to_string(), reason: format!("no task id in the reply: {}", snippet(&reply.body)) }),
    }
}

/// What a completed task came to: its response, or its error (a missing index is nothing to do).
fn task_result(what: &str, status: &Value) -> Attempt<Option<Value>, EsError> {
    match status.get("error") {
        Some(error) if error["type"] == "index_not_found_exception" => Attempt::Done(None),
        Some(error) => Attempt::Fail(EsError::TaskFailed { what: what.to_string(), count: 1, detail: snippet(error.to_string().as_bytes()) }),
        None => Attempt::Done(Some(status["response"].clone())),
    }
}
