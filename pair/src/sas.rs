//! The short authentication string both ends of a pairing connection show: five words derived
//! from the connection's TLS exporter value (the `binding` the proofs are bound to), so the two
//! ends of one connection show the same words and any other connection shows other words.
//!
//! Why: an invitation can leak (a photographed QR code, a "send me your code" message). Whoever
//! holds it can present a valid proof, but from their own connection, whose words differ from
//! the ones on the device in the user's hand. The inviter shows the requester's words and asks
//! before anything is handed over; a person comparing two screens catches the stranger.
//!
//! Five words from a list of 256 are 40 bits: a relay sitting between the two devices (two
//! connections, two bindings) makes both screens agree only by a 1-in-10^12 chance.

use sha2::{Digest, Sha256};

/// Words in a code.
pub const CODE_WORDS: usize = 5;

/// Domain separation: the code must not reveal anything about the proofs made from the same
/// binding.
const LABEL: &[u8] = b"fybrk pairing code v1";

/// The code for the pairing connection whose TLS exporter value is `binding`: five words
/// separated by spaces, the same on both ends.
pub fn code(binding: &[u8; 32]) -> String {
    let digest = Sha256::new_with_prefix(LABEL)
        .chain_update(binding)
        .finalize();
    digest
        .iter()
        .take(CODE_WORDS)
        .map(|b| WORDS[usize::from(*b)])
        .collect::<Vec<_>>()
        .join(" ")
}

/// 256 short, common, concrete English words, no two alike in spelling or sound, sorted.
const WORDS: [&str; 256] = [
    "acorn", "actor", "adobe", "agent", "alarm", "album", "alien", "alley", "amber", "angel",
    "ankle", "anvil", "apple", "apron", "arena", "arrow", "aspen", "atlas", "attic", "award",
    "bacon", "badge", "bagel", "baker", "bamboo", "banjo", "barn", "basil", "basin", "beach",
    "beard", "beaver", "bell", "berry", "bison", "blade", "blimp", "bloom", "board", "boat",
    "bonus", "boot", "bottle", "bowl", "brain", "brass", "bread", "brick", "bridge", "broom",
    "brush", "bubble", "bucket", "bugle", "cabin", "cable", "cactus", "camel", "camera", "canal",
    "candle", "canoe", "canyon", "carrot", "castle", "cedar", "cello", "chair", "chalk", "cherry",
    "chess", "circus", "citrus", "clock", "cloud", "clover", "coast", "cobra", "cocoa", "comet",
    "copper", "coral", "cotton", "crane", "crayon", "crown", "cube", "daisy", "dancer", "delta",
    "denim", "desert", "domino", "dragon", "drum", "eagle", "easel", "echo", "elbow", "ember",
    "engine", "falcon", "feather", "fence", "fern", "ferry", "fiddle", "finch", "flag", "flame",
    "flute", "forest", "fossil", "fox", "garden", "garlic", "gecko", "ginger", "globe", "goose",
    "grape", "gravel", "guitar", "hammer", "harbor", "harp", "hazel", "helmet", "heron", "hockey",
    "honey", "husky", "igloo", "iris", "island", "ivory", "jacket", "jaguar", "jelly", "jigsaw",
    "jungle", "kayak", "kettle", "kite", "koala", "ladder", "lagoon", "lemon", "lemur", "lily",
    "lion", "lizard", "llama", "lotus", "magnet", "mango", "maple", "marble", "meadow", "melon",
    "mirror", "mitten", "monkey", "moose", "motor", "muffin", "needle", "nest", "nickel", "noodle",
    "nutmeg", "oasis", "ocean", "olive", "onion", "orange", "orbit", "orchid", "otter", "owl",
    "oyster", "paddle", "palace", "panda", "parrot", "peach", "peanut", "pebble", "pepper",
    "piano", "pigeon", "pillow", "pilot", "pine", "planet", "plum", "pocket", "pony", "potato",
    "puffin", "quartz", "quilt", "rabbit", "radar", "radish", "raven", "reef", "ribbon", "river",
    "robot", "rocket", "rose", "ruby", "saddle", "salmon", "sandal", "satin", "scarf", "seal",
    "shadow", "shark", "shell", "silver", "skate", "sled", "snail", "spider", "spoon", "squid",
    "stamp", "statue", "sugar", "summit", "sunset", "swan", "tablet", "taco", "tiger", "toast",
    "tomato", "tulip", "tunnel", "turtle", "valley", "velvet", "violin", "wagon", "walnut",
    "walrus", "whale", "willow", "window", "wizard", "wolf", "yacht", "zebra",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_distinct_and_sorted() {
        let mut sorted = WORDS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
        assert_eq!(sorted, WORDS.to_vec());
        assert!(WORDS
            .iter()
            .all(|w| w.bytes().all(|b| b.is_ascii_lowercase())));
    }

    #[test]
    fn same_binding_same_code_other_binding_other_code() {
        let a = code(&[1; 32]);
        assert_eq!(a, code(&[1; 32]));
        assert_eq!(a.split(' ').count(), CODE_WORDS);
        assert_ne!(a, code(&[2; 32]));
    }
}
