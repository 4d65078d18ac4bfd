//! The latest entries of a kind (warnings, dead letters), bounded in count and in bytes: the
//! oldest go first, and each text is cut to a fixed length.

use std::collections::VecDeque;

/// The most characters kept of one text (a message, a reason, an id).
pub const MAX_TEXT: usize = 1024;

/// An entry's size in bytes, as it counts against the byte bound.
pub trait Weigh {
    fn weight(&self) -> usize;
}

#[derive(Debug)]
pub struct RecentLog<T> {
    entries: VecDeque<T>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    seen: u64,
}

impl<T: Weigh + Clone> RecentLog<T> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        RecentLog { entries: VecDeque::new(), bytes: 0, max_entries, max_bytes, seen: 0 }
    }

    pub fn push(&mut self, entry: T) {
        self.seen += 1;
        self.bytes += entry.weight();
        self.entries.push_back(entry);
        while self.entries.len() > self.max_entries || (self.bytes > self.max_bytes && !self.entries.is_empty()) {
            let dropped = self.entries.pop_front().expect("not empty");
            self.bytes -= dropped.weight();
        }
    }

    /// Oldest first.
    pub fn to_vec(&self) -> Vec<T> {
        self.entries.iter().cloned().collect()
    }

    /// Entries pushed in all, including those no longer kept.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// `text` cut to [`MAX_TEXT`] characters (an ellipsis marks a cut).
pub fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT) {
        None => text.to_string(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Text(String);
    impl Weigh for Text {
        fn weight(&self) -> usize {
            self.0.len()
        }
    }

    #[test]
    fn keeps_the_latest_within_count_and_bytes() {
        let mut log = RecentLog::new(3, 10);
        for s in ["a", "b", "c", "d"] {
            log.push(Text(s.into()));
        }
        assert_eq!(log.to_vec(), vec![Text("b".into()), Text("c".into()), Text("d".into())]);
        log.push(Text("1234567890".into()));
        assert_eq!(log.to_vec(), vec![Text("1234567890".into())], "bytes bound the log too");
        assert_eq!((log.bytes(), log.seen()), (10, 5));
        log.push(Text("x".repeat(50)));
        assert!(log.to_vec().is_empty(), "an entry larger than the bound is not kept");
        assert_eq!(log.bytes(), 0);
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT + 5);
        let cut = cut(&long);
        assert_eq!(cut.chars().count(), MAX_TEXT + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(super::cut("short"), "short");
    }
}
