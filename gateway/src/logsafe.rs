//! Client-supplied text made safe for a log line or an audit record: bounded in length
//! and with everything that could forge a line, steer a terminal or hide text escaped.
//!
//! Escaped: C0 controls (newline, carriage return, tab, ESC, ...), DEL, C1 controls
//! (U+0080..U+009F, which include the 8-bit CSI some terminals honour), the Unicode
//! line and paragraph separators and the bidirectional overrides that reorder what a
//! reader sees. Backslash is doubled so that an escaped value cannot be confused with
//! one that merely contains `\n`. The escaped text is cut at a character boundary and
//! ends in `...[+N bytes]` when it was longer than the bound.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Longest value, in bytes, that [`log_safe`] keeps (before its truncation marker).
pub const MAX_LOG_FIELD_BYTES: usize = 256;

fn needs_escape(c: char) -> bool {
    matches!(c,
        '\\'
        | '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{2028}' | '\u{2029}'
        | '\u{200e}' | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}'
        | '\u{feff}')
}

/// [`log_safe_bounded`] with [`MAX_LOG_FIELD_BYTES`].
pub fn log_safe(s: &str) -> Cow<'_, str> {
    log_safe_bounded(s, MAX_LOG_FIELD_BYTES)
}

/// `s` escaped and cut to at most `max` bytes of escaped text (plus the marker).
/// Borrowed when `s` needs neither.
pub fn log_safe_bounded(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max && !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max) + 24);
    let mut used = 0;
    for (i, c) in s.char_indices() {
        let start = out.len();
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
        if out.len() > max {
            out.truncate(start);
            let _ = write!(out, "...[+{} bytes]", s.len() - i);
            return Cow::Owned(out);
        }
        used = i + c.len_utf8();
    }
    debug_assert_eq!(used, s.len());
    Cow::Owned(out)
}

/// Makes one formatted log event safe to write as one line: every line break but the
/// final one and every other control character (tab kept) is escaped, and the line is
/// cut at `max` bytes. A last line of defence under [`log_safe`] at the call sites, so
/// that a value logged without it still cannot start a forged line or steer a terminal.
pub fn one_line(event: &[u8], max: usize) -> Cow<'_, [u8]> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    let text = String::from_utf8_lossy(body);
    let clean = text.len() <= max
        && !text
            .chars()
            .any(|c| c != '\t' && c != '\\' && needs_escape(c))
        && matches!(text, Cow::Borrowed(_));
    if clean {
        return Cow::Borrowed(event);
    }
    let mut out = String::with_capacity(text.len().min(max) + 32);
    for (i, c) in text.char_indices() {
        let start = out.len();
        match c {
            '\t' | '\\' => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
        if out.len() > max {
            out.truncate(start);
            let _ = write!(out, "...[log line cut: +{} bytes]", text.len() - i);
            break;
        }
    }
    out.push('\n');
    Cow::Owned(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(log_safe("alice@example.com"), Cow::Borrowed(_)));
        assert!(matches!(log_safe("Ünïcödé ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn line_breaks_terminal_escapes_and_bidi_are_escaped() {
        assert_eq!(log_safe("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(log_safe("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(log_safe("x\u{9b}2J"), "x\\u{9b}2J", "8-bit CSI");
        assert_eq!(log_safe("a\u{7f}"), "a\\u{7f}");
        assert_eq!(log_safe("a\u{2028}b"), "a\\u{2028}b");
        assert_eq!(log_safe("\u{202e}gnp.exe"), "\\u{202e}gnp.exe");
        assert_eq!(
            log_safe("a\\nb"),
            "a\\\\nb",
            "a literal backslash-n stays distinct"
        );
        assert_eq!(log_safe("\0"), "\\u{0}");
    }

    #[test]
    fn long_values_are_cut_with_a_marker() {
        let s = "x".repeat(64 * 1024);
        let out = log_safe(&s);
        assert!(out.len() < MAX_LOG_FIELD_BYTES + 32, "{}", out.len());
        assert!(out.ends_with(&format!("...[+{} bytes]", 64 * 1024 - 256)));
        // Cut at a character boundary, never inside one.
        let wide = "é".repeat(300);
        let out = log_safe(&wide);
        assert!(out.starts_with(&"é".repeat(128)));
        // Escapes count against the bound.
        let nl = "\n".repeat(1000);
        assert!(log_safe(&nl).len() < MAX_LOG_FIELD_BYTES + 32);
    }

    #[test]
    fn one_line_keeps_an_event_on_one_line() {
        let ev = b"INFO request sub=alice\nINFO forged line \x1b[2J\n";
        let out = one_line(ev, 1024);
        let s = std::str::from_utf8(&out).unwrap();
        assert_eq!(s.matches('\n').count(), 1);
        assert!(s.ends_with('\n'));
        assert!(!s.contains('\u{1b}'));
        assert!(s.contains("alice\\nINFO forged"));
        let clean = b"INFO fine\tline\n";
        assert!(matches!(one_line(clean, 1024), Cow::Borrowed(_)));
        let long = vec![b'y'; 100_000];
        let out = one_line(&long, 16 * 1024);
        assert!(out.len() < 16 * 1024 + 64);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    }

    #[test]
    fn the_bound_is_inclusive() {
        assert!(matches!(log_safe_bounded("abcd", 4), Cow::Borrowed("abcd")));
        assert_eq!(log_safe_bounded("abcde", 4), "abcd...[+1 bytes]");
        assert_eq!(log_safe_bounded("ab\n", 4), "ab\\n");
        assert_eq!(log_safe_bounded("ab\n", 3), "ab...[+1 bytes]");
        let long = vec![b'y'; 1000];
        assert_eq!(
            &*one_line(&long, 100),
            format!("{}...[log line cut: +900 bytes]\n", "y".repeat(100)).as_bytes()
        );
    }

    #[test]
    fn one_line_borrows_a_clean_line_up_to_the_bound() {
        assert!(matches!(one_line(b"ab\\c\td\n", 6), Cow::Borrowed(_)));
        assert_eq!(
            &*one_line(b"ab\\c\tde\n", 6),
            b"ab\\c\td...[log line cut: +1 bytes]\n"
        );
        assert_eq!(&*one_line(b"ab\x01\n", 7), b"ab\\u{1}\n");
        assert_eq!(
            &*one_line(b"ab\x01\n", 6),
            b"ab...[log line cut: +1 bytes]\n"
        );
        // Bytes that are not UTF-8 are replaced, never written raw.
        assert_eq!(&*one_line(b"a\xffb\n", 64), "a\u{fffd}b\n".as_bytes());
    }
}
