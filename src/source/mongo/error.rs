//! MongoDB driver errors as engine errors: what is worth retrying, what is lost history.

use mongodb::error::{Error, ErrorKind};

use crate::error::{cause_chain, ErrorCode, SyncError};

/// MongoDB's BSONObjectTooLarge: what a change stream reports for an event over 16 MB.
const BSON_OBJECT_TOO_LARGE: i32 = 10334;

/// Server errors that pass once the server (or a new primary) is back: shutdown and
/// step-down interruptions (often without a retry label), network failures seen by the server,
/// and a cursor the restarted server no longer knows (the copy resumes from its checkpoint).
const TRANSIENT_CODES: [i32; 13] = [
    6,     // HostUnreachable
    7,     // HostNotFound
    43,    // CursorNotFound
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// MongoDB's DuplicateKey, as a write error (insert, update) or a command error (findAndModify):
/// how the engine's conditional upserts (checkpoints, leases, definitions) learn they lost.
pub fn is_duplicate_key(err: &Error) -> bool {
    match &*err.kind {
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}

/// A whole number of 0 or more as stored in a document the engine keeps in MongoDB (a term, a
/// version, a duration): written by this engine (Int64), an older one (Int32) or by hand
/// (mongosh writes doubles). Anything else, a fraction or a negative number included, is `None`:
/// the caller says what is wrong rather than reading it as 0.
pub fn whole_number(value: Option<&mongodb::bson::Bson>) -> Option<u64> {
    use mongodb::bson::Bson;
    match value? {
        Bson::Int64(v) => u64::try_from(*v).ok(),
        Bson::Int32(v) => u64::try_from(*v).ok(),
        Bson::Double(v) if *v >= 0.0 && v.fract() == 0.0 && *v < 2f64.powi(63) => Some(*v as u64),
        _ => None,
    }
}

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
        ErrorKind::Command(c) if TRANSIENT_CODES.contains(&c.code) => ErrorCode::MongoUnreachable,
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

    /// A duplicate key is one whether the server reports it as a write error or (findAndModify)
    /// a command error: the defstore's copy knew only the first.
    #[test]
    fn a_duplicate_key_is_recognised_in_either_form() {
        assert!(is_duplicate_key(&command_error(11000, "DuplicateKey")));
        assert!(!is_duplicate_key(&command_error(2, "BadValue")));
        let write: mongodb::error::WriteError = mongodb::bson::from_document(doc! { "code": 11000, "errmsg": "E11000" }).unwrap();
        assert!(is_duplicate_key(&Error::from(ErrorKind::Write(mongodb::error::WriteFailure::WriteError(write)))));
    }

    /// Numbers the engine stores (terms, versions, durations) read back whatever wrote them;
    /// a fraction, a negative number or another type is no number, never 0.
    #[test]
    fn whole_numbers_of_any_writer_read_back() {
        use mongodb::bson::Bson;
        for (stored, read) in [(Bson::Int64(7), Some(7)), (Bson::Int32(7), Some(7)), (Bson::Double(7.0), Some(7)), (Bson::Int64(0), Some(0))] {
            assert_eq!(whole_number(Some(&stored)), read, "{stored}");
        }
        for odd in
            [Bson::Double(7.5), Bson::Int64(-1), Bson::Int32(-3), Bson::Double(-1.0), Bson::Double(f64::NAN), Bson::Double(1e19), Bson::String("7".into())]
        {
            assert_eq!(whole_number(Some(&odd)), None, "{odd}");
        }
        assert_eq!(whole_number(None), None);
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

    /// Issue 13, item 12: a server shutting down or stepping down interrupts operations with
    /// these codes, without a retry label when no retryable write is involved; the copy (and
    /// any read) resumes from its checkpoint once the server is back.
    #[test]
    fn shutdown_and_failover_interruptions_are_transient() {
        for (code, name) in [
            (11600, "InterruptedAtShutdown"),
            (91, "ShutdownInProgress"),
            (11602, "InterruptedDueToReplStateChange"),
            (189, "PrimarySteppedDown"),
            (10107, "NotWritablePrimary"),
            (13435, "NotPrimaryNoSecondaryOk"),
            (13436, "NotPrimaryOrSecondary"),
            (6, "HostUnreachable"),
            (7, "HostNotFound"),
            (89, "NetworkTimeout"),
            (9001, "SocketException"),
            (43, "CursorNotFound"),
        ] {
            assert_eq!(mongo_error("copy of shop.orders failed", &command_error(code, name)).code, ErrorCode::MongoUnreachable, "{name}");
        }
    }
}
