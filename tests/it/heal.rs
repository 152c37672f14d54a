//! Token healing: the pure planning on made-up vocabularies, then the embedded backend on
//! the real test model with cursors inside words, strings, comments and after multi-byte
//! characters.

use tierls::core::generation::{GenerateRequest, Prompt};
use tierls::core::heal::{HealState, Healing, PieceTable, plan_healing};
use tierls::models::embedded::{EmbeddedModel, EmbeddedOptions, test_model_path};
use tierls::models::{Cancel, generate};

fn table(pieces: &[&str]) -> PieceTable {
    PieceTable::new(
        pieces
            .iter()
            .enumerate()
            .map(|(id, piece)| (id as i32, piece.as_bytes().to_vec())),
    )
}

fn pieces(texts: &[&[u8]]) -> Vec<Vec<u8>> {
    texts.iter().map(|text| text.to_vec()).collect()
}

/// The healing for a prompt ending in `last` (control tokens as empty texts), shown.
fn check(vocabulary: &[&str], last: &[&[u8]]) -> String {
    match plan_healing(&pieces(last), &table(vocabulary)) {
        None => "not healed".to_owned(),
        Some(Healing {
            removed_tokens,
            text,
        }) => format!(
            "{removed_tokens} token(s) off: {:?}",
            String::from_utf8_lossy(&text)
        ),
    }
}

#[test]
fn what_comes_off_the_prompt() {
    let vocabulary = [
        "apply", "_", "disc", "discount", "d", " x", "\n", "é", " world", " total",
    ];
    let cases: &[(&str, &[&[u8]])] = &[
        ("inside a word", &[b"apply", b"_", b"disc"]),
        ("at the start of a file (BOS only)", &[b""]),
        ("after a line break", &[b"disc", b"\n"]),
        ("after a space", &[b"apply", b" "]),
        // `é` split into two byte tokens: both come off, so the text starts at a character.
        ("after a multi-byte character", &[b"na", &[0xc3], &[0xa9]]),
        ("inside a string", &[b"\"hello", b" wor"]),
        ("inside a comment", &[b"//", b" tot"]),
    ];
    let mut shown = String::new();
    for (case, last) in cases {
        shown += &format!("{case}: {}\n", check(&vocabulary, last));
    }
    // No token of the vocabulary starts with what would come off: the prompt stays.
    shown += &format!(
        "a vocabulary without a token for the text: {}\n",
        check(&["apply", "_"], &[b"apply", b"_", b"disc"])
    );
    insta::assert_snapshot!(shown);
}

#[test]
fn the_answer_must_agree_with_the_healed_text_and_leaves_it_out() {
    let vocabulary = table(&["di", "disc", "discount", "discard", "d", "count", "x"]);
    let healing = Healing {
        removed_tokens: 1,
        text: b"disc".to_vec(),
    };
    let mut state = HealState::new(&healing);
    let mut allowed: Vec<i32> = state.allowed(&vocabulary);
    allowed.sort_unstable();
    // "di", "disc", "discount", "discard", "d": each agrees with "disc"; "count", "x" not.
    assert_eq!(allowed, [0, 1, 2, 3, 4]);
    state.advance(b"di");
    assert!(state.constraining());
    let mut allowed: Vec<i32> = state.allowed(&vocabulary);
    allowed.sort_unstable();
    assert!(
        allowed.is_empty(),
        "no token starts with \"sc\": {allowed:?}"
    );
    state.advance(b"scount");
    assert!(!state.constraining());
    // The answer's bytes as they come: "di", then "scount(" — the user gets "ount(".
    let mut bytes = b"di".to_vec();
    state.hide(&mut bytes);
    assert!(bytes.is_empty() && state.hiding());
    let mut bytes = b"scount(".to_vec();
    state.hide(&mut bytes);
    assert_eq!(bytes, b"ount(");
    assert!(!state.hiding());
}

async fn answer(model: &EmbeddedModel, prompt: &str, heal: bool) -> String {
    let request = GenerateRequest {
        stop: vec!["\n".into()],
        heal,
        ..GenerateRequest::text(prompt, 16)
    };
    generate(model, 0, request, Cancel::new())
        .await
        .unwrap()
        .text
}

/// On the real model, a healed answer goes on from the cursor: the word finishes instead
/// of a new one starting, and nothing of the word is written twice. The hard places (the
/// start of the text, after a multi-byte character, in a string, in a comment) answer too.
#[tokio::test]
async fn the_test_model_finishes_the_word_it_is_inside() {
    let _turn = crate::support::one_model_at_a_time();
    let options = EmbeddedOptions {
        n_ctx: 1024,
        threads: 2,
        ..EmbeddedOptions::default()
    };
    let model = EmbeddedModel::load(&test_model_path(), &options).unwrap();
    let code = "def apply_discount(price, percent):\n    return price * (1 - percent / 100)\n\n\ndef total(prices):\n    return [apply_disc";
    let healed = answer(&model, code, true).await;
    assert!(
        healed.starts_with("ount("),
        "healed: {healed:?}, plain: {:?}",
        answer(&model, code, false).await
    );
    for prompt in [
        "a",
        "naïve_total = 1\nprint(naï",
        "message = \"hello wor",
        "# compute the tot",
        "x = 1\n",
    ] {
        let healed = answer(&model, prompt, true).await;
        assert!(!healed.contains('\u{fffd}'), "{prompt:?}: {healed:?}");
    }
    // A FIM prompt on a model without FIM tokens heals its prefix the same way.
    let fim = GenerateRequest {
        stop: vec!["\n".into()],
        heal: true,
        ..GenerateRequest::text("", 16)
    };
    let fim = GenerateRequest {
        prompt: Prompt::Fim {
            prefix: code.to_owned(),
            suffix: "]\n".to_owned(),
            context: Default::default(),
        },
        ..fim
    };
    let text = generate(&model, 0, fim, Cancel::new()).await.unwrap().text;
    assert!(text.starts_with("ount("), "{text:?}");
}
