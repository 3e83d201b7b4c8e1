//! What a line-protocol write did, line by line: the lines that failed (in parsing, or in
//! storage's schema and retention checks) with why, and the sentence that sums it up, as
//! InfluxDB 3 words it. The server only renders it, in each API's error shape.

use std::fmt;

/// A line that was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the body.
    pub line_number: u32,
    /// The line as sent (cut to 1 KiB).
    pub original_line: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {}: {}",
            self.line_number, self.message, self.original_line
        )
    }
}

/// Most lines a report lists; the rest are counted. A body of 10 MiB of bad lines would
/// otherwise answer with a list ten times its size.
pub const LISTED_ERRORS: usize = 100;

/// The outcome of one line-protocol write.
#[derive(Debug, Clone)]
pub struct WriteReport {
    /// Lines that held a point or an error (not comments or blank lines).
    total_lines: usize,
    /// Lines stored.
    accepted: usize,
    accept_partial: bool,
    /// The lines not stored, by line number once [`WriteReport::stored`] ran; only the first
    /// [`LISTED_ERRORS`] after it.
    errors: Vec<LineError>,
    /// How many lines were not stored.
    rejected: usize,
}

impl WriteReport {
    /// The report of a body of `total_lines` lines of which `errors` did not parse, written
    /// with or without `accept_partial`.
    pub fn new(total_lines: usize, errors: Vec<LineError>, accept_partial: bool) -> Self {
        WriteReport {
            total_lines,
            accepted: 0,
            accept_partial,
            rejected: errors.len(),
            errors,
        }
    }

    /// Whether the lines that parsed go to storage: not when partial writes are refused and
    /// a line failed to parse.
    pub fn should_store(&self) -> bool {
        self.accept_partial || self.errors.is_empty()
    }

    /// Records what storage made of the lines that parsed: `accepted` stored, `rejected`
    /// refused by its rules (as line numbers and why; `texts` gives the texts of ascending
    /// line numbers, as `line_protocol::line_texts` does from the body).
    /// Keeps the first [`LISTED_ERRORS`] lines not stored, and counts the rest.
    pub fn stored(
        &mut self,
        accepted: usize,
        rejected: impl IntoIterator<Item = (u32, String)>,
        texts: impl FnOnce(&[u32]) -> Vec<String>,
    ) {
        self.accepted = accepted;
        self.errors.extend(
            rejected
                .into_iter()
                .map(|(line_number, message)| LineError {
                    line_number,
                    original_line: String::new(),
                    message,
                }),
        );
        self.rejected = self.errors.len();
        self.errors.sort_by_key(|e| e.line_number);
        self.errors.truncate(LISTED_ERRORS);
        // the texts of the listed lines storage refused (parse errors come with theirs)
        let wanted: Vec<u32> = self
            .errors
            .iter()
            .filter(|e| e.original_line.is_empty())
            .map(|e| e.line_number)
            .collect();
        let mut texts = texts(&wanted).into_iter();
        for e in self
            .errors
            .iter_mut()
            .filter(|e| e.original_line.is_empty())
        {
            e.original_line = texts.next().unwrap_or_default();
        }
    }

    /// Lines stored.
    pub fn accepted(&self) -> usize {
        self.accepted
    }

    /// Lines that held a point or an error.
    pub fn total_lines(&self) -> usize {
        self.total_lines
    }

    /// The lines not stored, by line number (the first [`LISTED_ERRORS`]); empty when every
    /// line was.
    pub fn errors(&self) -> &[LineError] {
        &self.errors
    }

    /// How many lines were not stored, listed or not.
    pub fn rejected(&self) -> usize {
        self.rejected
    }

    /// What happened, in a sentence: the write was refused, stored nothing, or stored part.
    pub fn summary(&self) -> String {
        let (accepted, total, rejected) = (self.accepted, self.total_lines, self.rejected);
        let listed = if rejected > self.errors.len() {
            format!(" (the first {} are listed)", self.errors.len())
        } else {
            String::new()
        };
        let summary = if accepted == 0 && !self.accept_partial {
            format!(
                "write refused: {rejected} of {total} lines have errors and accept_partial=false, \
                 so nothing was written"
            )
        } else if accepted == 0 {
            format!("no data written: all {total} lines were rejected")
        } else {
            format!(
                "partial write of line protocol occurred: {accepted} of {total} lines were \
                 written, {rejected} rejected"
            )
        };
        summary + &listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line_protocol::line_texts;

    fn error(line_number: u32) -> LineError {
        LineError {
            line_number,
            original_line: format!("line {line_number}"),
            message: "bad".into(),
        }
    }

    #[test]
    fn a_report_orders_the_lines_and_says_what_was_written() {
        let mut partial = WriteReport::new(4, vec![error(3)], true);
        assert!(partial.should_store());
        partial.stored(2, [(1, "bad".to_string())], |l| {
            line_texts(b"first\nsecond", l)
        });
        let lines: Vec<u32> = partial.errors().iter().map(|e| e.line_number).collect();
        assert_eq!(lines, [1, 3]);
        assert_eq!(partial.errors()[0].original_line, "first");
        assert_eq!(
            partial.summary(),
            "partial write of line protocol occurred: 2 of 4 lines were written, 2 rejected"
        );

        let refused = WriteReport::new(4, vec![error(2)], false);
        assert!(!refused.should_store());
        assert!(refused.summary().starts_with("write refused: 1 of 4 lines"));

        let mut none = WriteReport::new(2, vec![error(1)], true);
        none.stored(0, [(2, "bad".to_string())], |l| line_texts(b"", l));
        assert_eq!(none.summary(), "no data written: all 2 lines were rejected");

        let mut clean = WriteReport::new(2, Vec::new(), false);
        assert!(clean.should_store());
        clean.stored(2, [], |l| line_texts(b"", l));
        assert!(clean.errors().is_empty());
    }

    #[test]
    fn a_report_of_many_bad_lines_lists_the_first_and_counts_the_rest() {
        let body: String = (0..60_000).map(|i| format!("m v={i}i\n")).collect();
        let mut report = WriteReport::new(60_000, vec![error(7)], true);
        report.stored(
            1,
            (1..=60_000u32)
                .filter(|&l| l != 7 && l != 9)
                .map(|l| (l, "conflict".to_string())),
            |l| line_texts(body.as_bytes(), l),
        );
        assert_eq!(report.rejected(), 59_999);
        assert_eq!(report.errors().len(), LISTED_ERRORS);
        assert_eq!(report.errors()[0].original_line, "m v=0i");
        assert_eq!(
            report.errors()[6].original_line,
            "line 7",
            "parse errors keep theirs"
        );
        assert_eq!(report.errors()[99].line_number, 101);
        assert_eq!(report.errors()[99].original_line, "m v=100i");
        assert!(
            report
                .summary()
                .ends_with("59999 rejected (the first 100 are listed)"),
            "{}",
            report.summary()
        );
    }
}
