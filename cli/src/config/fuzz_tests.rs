//! Fuzz-style property tests (issue 11): `Config::parse` is fed arbitrary text, arbitrary values
//! for each key and mutations of a valid file; it must never panic, and an error must point at
//! a line and column inside the text.

use proptest::prelude::*;

use super::*;

/// One mutation of a byte string: flip a bit, insert, delete or truncate.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        match m {
            Mutation::Flip(i, bit) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
            Mutation::Delete(i) if !bytes.is_empty() => {
                bytes.remove(i.index(bytes.len()));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            _ => {}
        }
    }
    bytes
}

const VALID: &str = r#"
listen = "127.0.0.1:9000"
name = "laptop"
rendezvous = "rdv.example.org:22101"
stun = ["stun.example.org:3478", "192.0.2.1"]
turn = "turn:turn.example.org:3478?user=u&pass=p"

[history]
keep = "90d"
max_size = "20G"
"#;

/// A value that needs no escaping inside a TOML basic string.
const PLAIN: &str = "[^\"\\\\\\x00-\\x1f\\x7f]{0,40}";

fn check(text: &str) -> Result<(), TestCaseError> {
    match Config::parse(text, Path::new("/etc/fybrk.toml")) {
        Ok(c) => {
            prop_assert!(c.stun.len() <= text.len());
            prop_assert!(c.name.as_ref().is_none_or(|n| n.len() <= text.len()));
            prop_assert!(c.retention.max_age >= KEEP_ALL);
        }
        Err(ConfigError::Invalid { line, column, .. }) => {
            prop_assert!(line >= 1 && line <= text.lines().count().max(1) + 1);
            prop_assert!(column >= 1 && column <= text.chars().count() + 1);
        }
        Err(e) => prop_assert!(false, "unexpected error {e}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fuzz_arbitrary_text(text in "(?s).{0,300}", toml_ish in "[a-z_=\\[\\]\" .:0-9\n\\\\]{0,200}") {
        check(&text)?;
        check(&toml_ish)?;
        let _ = key_of_value_at(&toml_ish, toml_ish.len() / 2);
    }

    #[test]
    fn fuzz_arbitrary_values(key in prop::sample::select(
                                 vec!["listen", "name", "rendezvous", "turn", "stun", "keep", "max_size"]),
                             value in PLAIN) {
        let text = match key {
            "stun" => format!("stun = [\"{value}\"]\n"),
            "keep" | "max_size" => format!("[history]\n{key} = \"{value}\"\n"),
            _ => format!("{key} = \"{value}\"\n"),
        };
        check(&text)?;
        let _ = parse_age(&value);
        let _ = parse_size(&value);
        let _ = check_host_port(&value);
    }

    #[test]
    fn fuzz_mutated_file(muts in prop::collection::vec(arb_mutation(), 1..6)) {
        let bad = mutate(VALID.as_bytes().to_vec(), &muts);
        check(&String::from_utf8_lossy(&bad))?;
    }

    #[test]
    fn fuzz_round_trip(port in 1u16.., name in "[a-z][a-z0-9-]{0,20}", days in 1u64..10_000,
                       gib in 0u64..1_000_000) {
        let text = format!(
            "listen = \"0.0.0.0:{port}\"\nname = \"{name}\"\n[history]\nkeep = \"{days}d\"\nmax_size = \"{gib}G\"\n"
        );
        let c = Config::parse(&text, Path::new("/c.toml")).unwrap();
        prop_assert_eq!(c.listen, Some(SocketAddr::from(([0, 0, 0, 0], port))));
        prop_assert_eq!(c.name, Some(name));
        prop_assert_eq!(c.retention.max_age, std::time::Duration::from_secs(days * 86_400));
        prop_assert_eq!(c.retention.max_bytes, Some(gib << 30));
    }
}
