use super::*;
use proptest::prelude::*;
use unicode_normalization::char::canonical_combining_class;
use unicode_normalization::UnicodeNormalization as _;

/// Checked one by one, all 32 896 of them: a single character a platform
/// rewrites would corrupt every message that happens to use it.
#[test]
fn every_dense_character_is_a_lone_visible_bmp_letter_that_normalisation_keeps() {
    let mut seen = std::collections::HashSet::new();
    for c in dense_characters() {
        let cp = u32::from(c);
        assert!(seen.insert(c), "U+{cp:04X} is in the alphabet twice");
        assert!(!c.is_whitespace(), "U+{cp:04X} is whitespace");
        assert!(!c.is_control(), "U+{cp:04X} is a control");
        assert!(c.is_alphabetic(), "U+{cp:04X} is not an assigned letter");
        assert_eq!(canonical_combining_class(c), 0, "U+{cp:04X} combines");
        assert_eq!(c.len_utf16(), 1, "U+{cp:04X} is not one UTF-16 unit");
        assert!(
            !(0xD800..=0xDFFF).contains(&cp),
            "U+{cp:04X} is a surrogate"
        );
        assert!(
            !(0xE000..=0xF8FF).contains(&cp),
            "U+{cp:04X} is private use"
        );
        assert!(
            !(0xF900..=0xFAFF).contains(&cp),
            "U+{cp:04X} is a compatibility ideograph"
        );
        assert!(!(0x1100..=0x11FF).contains(&cp) && !(0x3130..=0x318F).contains(&cp));
        assert!(!c.is_ascii(), "U+{cp:04X} would read as base64");
        let alone = c.to_string();
        assert_eq!(
            alone.nfc().collect::<String>(),
            alone,
            "NFC changes U+{cp:04X}"
        );
        assert_eq!(
            alone.nfkc().collect::<String>(),
            alone,
            "NFKC changes U+{cp:04X}"
        );
    }
    assert_eq!(seen.len(), (1 << 15) + (1 << 7));
}

#[test]
fn each_character_reads_back_as_the_value_it_was_written_for() {
    for v in 0..1u32 << 15 {
        assert!(
            matches!(value_of(main_char(v)), Some(Value::Main(w)) if w == v),
            "{v}"
        );
    }
    for v in 0..1u32 << 7 {
        assert!(
            matches!(value_of(final_char(v)), Some(Value::Final(w)) if w == v),
            "{v}"
        );
    }
}

#[test]
fn a_text_of_n_characters_holds_exactly_bytes_in_n_bytes() {
    for chars in 0..400 {
        for alphabet in Alphabet::ALL {
            let n = alphabet.bytes_in(chars);
            let fits = alphabet.encode(&vec![0xA5; n]).chars().count();
            assert!(fits <= chars, "{alphabet}: {n} bytes took {fits} > {chars}");
            let over = alphabet.encode(&vec![0xA5; n + 1]).chars().count();
            assert!(over > chars, "{alphabet}: {} bytes fit {chars}", n + 1);
        }
    }
}

/// The figure for the "bytes per message" line (issue 29).
#[test]
fn a_4096_character_message_carries_7680_bytes_dense_and_3072_base64() {
    assert_eq!(Alphabet::Dense.bytes_in(4096), 7680);
    assert_eq!(Alphabet::Base64.bytes_in(4096), 3072);
    assert_eq!(Alphabet::Dense.bytes_in(2000), 3750);
    assert_eq!(Alphabet::Base64.bytes_in(2000), 1500);
    let text = Alphabet::Dense.encode(&[0xFF; 7680]);
    assert_eq!(text.encode_utf16().count(), 4096);
}

#[test]
fn the_alphabet_is_told_by_the_first_character() {
    assert_eq!(
        Alphabet::of(&Alphabet::Base64.encode(b"PG\x01")),
        Alphabet::Base64
    );
    assert_eq!(
        Alphabet::of(&Alphabet::Dense.encode(b"PG\x01")),
        Alphabet::Dense
    );
    assert_eq!(Alphabet::of(""), Alphabet::Base64);
    assert_eq!(Alphabet::decode("UEcB").unwrap(), b"PG\x01");
}

#[test]
fn altered_dense_text_is_refused_with_where_and_why() {
    let text = Alphabet::Dense.encode(b"pigeon carries");
    let mut chars: Vec<char> = text.chars().collect();
    // A foreign character in the middle.
    let mut foreign = chars.clone();
    foreign[2] = 'x';
    let err = Alphabet::decode(&foreign.iter().collect::<String>()).unwrap_err();
    assert_eq!(err, DenseError::Foreign { at: 2, found: 'x' });
    assert!(err.to_string().contains("U+0078"), "{err}");
    // A closing character before the end.
    chars.insert(1, final_char(0));
    let err = Alphabet::decode(&chars.iter().collect::<String>()).unwrap_err();
    assert_eq!(err, DenseError::EarlyEnd { at: 1 });
    // Padding bits set: "p" is 8 bits, written in one main character with
    // 7 zero bits after them.
    let one = Alphabet::Dense.encode(b"p");
    let c = one.chars().next().unwrap();
    let Some(Value::Main(v)) = value_of(c) else {
        panic!("8 bits go in a main character")
    };
    let bad = main_char(v | 1).to_string();
    assert_eq!(Alphabet::decode(&bad).unwrap_err(), DenseError::Padding);
    // A closing character that carries nothing: "" is written as nothing.
    let empty = final_char(0).to_string();
    assert_eq!(Alphabet::decode(&empty).unwrap_err(), DenseError::Padding);
}

fn dense_text() -> impl Strategy<Value = String> {
    let any_char = prop_oneof![
        (0..1u32 << 15).prop_map(main_char),
        (0..1u32 << 7).prop_map(final_char),
        any::<char>(),
    ];
    proptest::collection::vec(any_char, 0..64).prop_map(|v| v.into_iter().collect())
}

proptest! {
    #[test]
    fn any_bytes_come_back_unchanged(bytes in proptest::collection::vec(any::<u8>(), 0..=16 * 1024)) {
        let text = Alphabet::Dense.encode(&bytes);
        prop_assert_eq!(text.chars().count(), (bytes.len() * 8).div_ceil(15));
        prop_assert_eq!(Alphabet::spelled_len(&text), bytes.len());
        prop_assert_eq!(Alphabet::decode(&text).unwrap(), bytes);
    }

    #[test]
    fn base64_texts_say_their_length_too(bytes in proptest::collection::vec(any::<u8>(), 0..=256)) {
        let text = Alphabet::Base64.encode(&bytes);
        prop_assert_eq!(Alphabet::spelled_len(&text), bytes.len());
    }

    /// What a platform that normalises would send on is what was sent.
    #[test]
    fn encoded_text_is_its_own_nfc_and_nfkc(bytes in proptest::collection::vec(any::<u8>(), 0..=16 * 1024)) {
        let text = Alphabet::Dense.encode(&bytes);
        prop_assert!(text.nfc().eq(text.chars()), "NFC changed the text");
        prop_assert!(text.nfkc().eq(text.chars()), "NFKC changed the text");
    }

    /// Garbage is an error, never a panic; and what is accepted is the one
    /// spelling of its bytes.
    #[test]
    fn any_text_decodes_to_an_error_or_to_bytes_spelled_that_way(text in dense_text()) {
        if let Ok(bytes) = Alphabet::decode(&text) {
            prop_assert_eq!(Alphabet::of(&text).encode(&bytes), text);
        }
    }

    #[test]
    fn any_string_at_all_never_panics(text in ".*") {
        let _ = Alphabet::decode(&text);
    }
}
