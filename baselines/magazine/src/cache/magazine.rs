//! Magazines: libumem's magazine types, the sizes a cache starts at and grows through, and
//! the rounds a magazine holds.

use std::ptr::NonNull;

/// libumem's magazine types (`umem_magtype`): rounds per magazine, and the largest buffer
/// (`mt_maxbuf`) for which a cache may still grow *past* this type. The first type whose
/// `mt_minbuf` is below the buffer size is a cache's starting type.
const MAGTYPES: [(usize, usize, usize); 9] = [
    // (rounds, mt_minbuf, mt_maxbuf)
    (1, 3200, 65536),
    (3, 256, 32768),
    (7, 64, 16384),
    (15, 0, 8192),
    (31, 0, 4096),
    (47, 0, 2048),
    (63, 0, 1024),
    (95, 0, 512),
    (143, 0, 0),
];

/// libumem's starting magazine size for buffers of `chunk` bytes.
pub(super) fn initial_rounds(chunk: usize) -> usize {
    MAGTYPES
        .iter()
        .find(|&&(_, minbuf, _)| chunk > minbuf)
        .map_or(1, |&(rounds, _, _)| rounds)
}

/// The next magazine size after `rounds` for buffers of `chunk` bytes, if libumem would grow:
/// the current type must allow growth for this buffer size (`chunk < mt_maxbuf`).
pub(super) fn next_rounds(rounds: usize, chunk: usize) -> Option<usize> {
    let current = MAGTYPES
        .iter()
        .rev()
        .find(|&&(r, _, _)| r <= rounds)
        .copied()
        .unwrap_or(MAGTYPES[0]);
    if chunk >= current.2 {
        return None;
    }
    MAGTYPES
        .iter()
        .find(|&&(r, _, _)| r > rounds)
        .map(|&(r, _, _)| r)
}

/// One object held in a magazine.
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub(crate) struct Round(pub(super) NonNull<u8>);

// SAFETY: a round is a free object of the cache, owned by whichever magazine holds it; moving
// it between threads moves that ownership.
unsafe impl Send for Round {}

/// A magazine: an array of rounds. Capacity 0 stands for "no magazine" (libumem's NULL).
pub(super) type Mag = Vec<Round>;

pub(super) fn as_objects(rounds: &[Round]) -> &[NonNull<u8>] {
    // SAFETY: `Round` is `repr(transparent)` over `NonNull<u8>`.
    unsafe { std::slice::from_raw_parts(rounds.as_ptr().cast(), rounds.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magazine_types_follow_libumem() {
        assert_eq!(initial_rounds(64), 15);
        assert_eq!(initial_rounds(200), 7);
        assert_eq!(initial_rounds(1000), 3);
        assert_eq!(initial_rounds(4096), 1);
        // 64-byte buffers grow through every type up to 143 rounds.
        let mut rounds = 15;
        let mut seen = vec![rounds];
        while let Some(next) = next_rounds(rounds, 64) {
            rounds = next;
            seen.push(rounds);
        }
        assert_eq!(seen, [15, 31, 47, 63, 95, 143]);
        // 2 KiB buffers stop where mt_maxbuf says.
        assert_eq!(next_rounds(47, 2048), None);
        assert_eq!(next_rounds(31, 2048), Some(47));
    }
}
