//! Making untrusted names safe to put on the terminal.
//!
//! Names come from the remote side, from transfers and from the local disk.
//! Any of them may carry control characters: an ANSI escape that recolours
//! the screen, an OSC 52 sequence that writes the clipboard, a bare carriage
//! return that hides the real name, or a bidi override that reverses it.
//! [`escape_control`] turns every such character into visible, inert text
//! before it reaches a widget. It is written by hand because it is a dozen
//! lines and the exact escape format is part of what we test.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` with every control character (C0, DEL, C1) and every bidi control
/// replaced by a visible escape: `\n`, `\r`, `\t`, `\x1b`, `\u{202e}`.
///
/// Borrows when there is nothing to escape, which is nearly always.
///
/// ```ignore
/// assert_eq!(escape_control("\x1b[31mred"), "\\x1b[31mred");
/// ```
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) <= 0xff && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Control characters, plus the invisible bidi controls that reorder text
/// (the "Trojan Source" set) and the zero-width ones used to spoof names.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_borrowed_unchanged() {
        let name = "report (final) – ünïcode 日本.pdf";
        assert!(matches!(escape_control(name), Cow::Borrowed(n) if n == name));
    }

    #[test]
    fn ansi_colour_sequence_is_rendered_inert() {
        assert_eq!(
            escape_control("\x1b[31mred\x1b[0m.txt"),
            "\\x1b[31mred\\x1b[0m.txt"
        );
    }

    #[test]
    fn osc52_clipboard_write_is_rendered_inert() {
        let hostile = "a\x1b]52;c;ZXZpbA==\x07b";
        let shown = escape_control(hostile);
        assert_eq!(shown, "a\\x1b]52;c;ZXZpbA==\\x07b");
        assert!(!shown.contains('\x1b') && !shown.contains('\x07'));
    }

    #[test]
    fn c1_csi_and_del_are_escaped() {
        assert_eq!(escape_control("x\u{9b}2Jy\u{7f}"), "x\\x9b2Jy\\x7f");
    }

    #[test]
    fn line_breaks_and_tabs_use_short_escapes() {
        assert_eq!(
            escape_control("fake\rreal\n\tname"),
            "fake\\rreal\\n\\tname"
        );
    }

    #[test]
    fn bidi_override_is_escaped() {
        assert_eq!(
            escape_control("invoice\u{202e}fdp.exe"),
            "invoice\\u{202e}fdp.exe"
        );
    }

    #[test]
    fn escaped_output_contains_no_control_characters() {
        let fixtures = [
            "\x1b[2J\x1b[H",
            "\x1bP+q\x1b\\",
            "\x1b[?1049l",
            "\u{0}\u{1}\u{1f}",
            "\u{85}\u{9f}",
            "\u{2066}\u{2069}\u{200b}\u{feff}",
        ];
        for fixture in fixtures {
            let shown = escape_control(fixture);
            assert!(!shown.chars().any(needs_escape), "{fixture:?} -> {shown:?}");
        }
    }
}
