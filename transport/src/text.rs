//! Text that came from the peer, made safe to print.
//!
//! A peer's strings (close reasons, refusal messages, payload names, anything decoded from its
//! bytes) reach our errors and logs. They are untrusted: arbitrarily long, and able to carry
//! terminal escapes, line breaks or bidirectional overrides that would forge or hide output.
//! [`peer_text`] keeps at most [`PEER_TEXT_MAX_CHARS`] characters and escapes every character
//! that is not a visible one.

/// Most characters of a peer's text shown in an error or a log line.
pub const PEER_TEXT_MAX_CHARS: usize = 200;

/// `bytes` from the peer as printable text: invalid UTF-8 replaced, control, format and other
/// invisible characters escaped (`\n`, `\u{202e}`, ...), cut after [`PEER_TEXT_MAX_CHARS`]
/// characters with a note of how much was left out.
pub fn peer_text(bytes: &[u8]) -> String {
    peer_text_max(bytes, PEER_TEXT_MAX_CHARS)
}

/// [`peer_text`] keeping at most `max_chars` characters.
pub fn peer_text_max(bytes: &[u8], max_chars: usize) -> String {
    // never decode more than the characters shown can use (4 bytes each at most)
    let window = bytes.len().min(max_chars.saturating_mul(4));
    let head = bytes.get(..window).unwrap_or(bytes);
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(window.min(1024));
    let mut used_bytes = 0usize;
    let mut shown = 0usize;
    for c in text.chars() {
        if shown == max_chars {
            break;
        }
        shown += 1;
        used_bytes += c.len_utf8();
        if visible(c) {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    // replacement characters stand for 1 to 3 invalid bytes: count from the source when whole
    let left = if shown < max_chars && window == bytes.len() {
        0
    } else {
        bytes.len().saturating_sub(used_bytes)
    };
    if left > 0 {
        out.push_str(&format!("... ({left} more bytes)"));
    }
    out
}

/// Visible characters: ASCII graphic characters and the space, and non-ASCII letters, digits
/// and punctuation. Controls, format characters (bidirectional overrides, zero-width joiners)
/// and other separators are not.
fn visible(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_graphic() || c == ' ';
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    // format characters and other invisible ones Rust cannot classify: the common ones
    !matches!(c,
        '\u{00ad}'
        | '\u{034f}'
        | '\u{061c}'
        | '\u{115f}'..='\u{1160}'
        | '\u{17b4}'..='\u{17b5}'
        | '\u{180b}'..='\u{180f}'
        | '\u{200b}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}'
        | '\u{3164}'
        | '\u{fe00}'..='\u{fe0f}'
        | '\u{feff}'
        | '\u{ffa0}'
        | '\u{fff0}'..='\u{fffb}'
        | '\u{e0000}'..='\u{e0fff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_kept() {
        assert_eq!(
            peer_text(b"options differ: ring 36 vs 40"),
            "options differ: ring 36 vs 40"
        );
        assert_eq!(peer_text("Grüße, 東京".as_bytes()), "Grüße, 東京");
    }

    #[test]
    fn invisible_and_control_characters_are_escaped() {
        let t = peer_text("a\nb\x1b[31mc\u{202e}d\0".as_bytes());
        assert!(!t.chars().any(|c| c.is_control() || c == '\u{202e}'), "{t}");
        assert!(
            t.contains("\\n") && t.contains("\\u{1b}") && t.contains("\\u{202e}"),
            "{t}"
        );
    }

    #[test]
    fn long_text_is_cut_with_a_count() {
        let long = vec![b'x'; 10_000];
        let t = peer_text(&long);
        assert!(t.starts_with(&"x".repeat(PEER_TEXT_MAX_CHARS)));
        assert!(t.ends_with("(9800 more bytes)"), "{t}");
        assert_eq!(peer_text_max(b"abc", 3), "abc");
        assert_eq!(peer_text_max(b"abcd", 3), "abc... (1 more bytes)");
        assert_eq!(peer_text(&[0xff, 0xfe, b'a']), "\u{fffd}\u{fffd}a");
    }
}
