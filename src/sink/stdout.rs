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
    type Error = std::io::Error;
    type Progress = ();

    fn describe(&self) -> String {
        "stdout".into()
    }

    async fn open(&self) -> std::io::Result<()> {
        Ok(())
    }

    async fn send(&self, records: &[Record], _: &mut ()) -> std::io::Result<()> {
        let buf = ndjson(records);
        let _turn = self.lock.lock().await;
        let mut out = tokio::io::stdout();
        out.write_all(&buf).await?;
        out.flush().await
    }
}
