//! NDJSON records on standard output, for piping into other tools.

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::record::{ndjson, Record, RecordTransport};

/// Batches are written whole, one at a time (the lock), so lines never interleave.
#[derive(Default)]
pub struct StdoutTransport {
    lock: tokio::sync::Mutex<()>,
}

#[async_trait]
impl RecordTransport for StdoutTransport {
    fn describe(&self) -> String {
        "stdout".into()
    }

    async fn open(&self) -> Result<(), String> {
        Ok(())
    }

    async fn send(&self, records: &[Record]) -> Result<(), String> {
        let buf = ndjson(records);
        let _turn = self.lock.lock().await;
        let mut out = tokio::io::stdout();
        out.write_all(&buf).await.map_err(|e| e.to_string())?;
        out.flush().await.map_err(|e| e.to_string())
    }
}
