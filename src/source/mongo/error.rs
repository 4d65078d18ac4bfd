//! MongoDB driver errors as engine errors: what is worth retrying, what is lost history.

use mongodb::error::{Error, ErrorKind};

use crate::error::{cause_chain, ErrorCode, SyncError};

/// MongoDB's BSONObjectTooLarge: what a change stream reports for an event over 16 MB.
const BSON_OBJECT_TOO_LARGE: i32 = 10334;

/// Maps a driver error to an engine error. Network and server-selection failures get
/// `MongoUnreachable`, which the pipeline treats as transient once it runs.
pub fn mongo_error(context: impl std::fmt::Display, err: &Error) -> SyncError {
    let code = match &*err.kind {
        ErrorKind::Command(c) if c.code == BSON_OBJECT_TOO_LARGE => {
            return SyncError::new(
                ErrorCode::EventTooLarge,
                format!(
                    "{context}: a change event is over MongoDB's 16 MB limit (a large document with a large update), \
                     so the server cannot return it and the stream cannot go past it; the position before it is kept. \
                     Cause: {}",
                    cause_chain(err)
                ),
            );
        }
        ErrorKind::Io(_) | ErrorKind::ServerSelection { .. } | ErrorKind::ConnectionPoolCleared { .. } => ErrorCode::MongoUnreachable,
        _ if err.contains_label("ResumableChangeStreamError") || err.contains_label("RetryableWriteError") => ErrorCode::MongoUnreachable,
        _ if is_history_lost(err) => ErrorCode::HistoryLost,
        _ => ErrorCode::Mongo,
    };
    SyncError::new(code, format!("{context}: {}", cause_chain(err)))
}

/// The saved position is gone from the oplog (ChangeStreamHistoryLost, 286), or the token
/// is not one the server can resume from (e.g. FailedToParse for a corrupted token).
pub fn is_history_lost(err: &Error) -> bool {
    let code = match &*err.kind {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    };
    matches!(code, Some(286 | 280 | 9 | 260)) || err.to_string().contains("resume token")
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;
    use mongodb::error::CommandError;

    use super::*;

    fn command_error(code: i32, name: &str) -> Error {
        let c: CommandError = mongodb::bson::from_document(doc! { "code": code, "codeName": name, "errmsg": "boom" }).unwrap();
        Error::from(ErrorKind::Command(c))
    }

    #[test]
    fn server_errors_get_their_codes() {
        let too_large = mongo_error("change stream of shop.orders failed", &command_error(10334, "BSONObjectTooLarge"));
        assert_eq!(too_large.code, ErrorCode::EventTooLarge);
        assert!(too_large.message.starts_with("change stream of shop.orders failed: a change event is over MongoDB's 16 MB limit"), "{}", too_large.message);
        assert!(too_large.message.contains("BSONObjectTooLarge"), "{}", too_large.message);
        assert_eq!(mongo_error("x", &command_error(286, "ChangeStreamHistoryLost")).code, ErrorCode::HistoryLost);
        assert_eq!(mongo_error("x", &command_error(2, "BadValue")).code, ErrorCode::Mongo);
    }
}
