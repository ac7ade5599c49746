//! [`Bitmap`]: which chunks of a transfer are held, one bit per chunk.
//!
//! Stored as one small record per transfer (a 1 GiB file in 3 KB chunks is
//! 44 KB of bits), so resuming needs no scan of the data.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bitmap {
    len: u32,
    count: u32,
    words: Vec<u64>,
}

impl Bitmap {
    pub fn new(len: u32) -> Bitmap {
        Bitmap {
            len,
            count: 0,
            words: vec![0; (len as usize).div_ceil(64)],
        }
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many bits are set.
    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_complete(&self) -> bool {
        self.count == self.len
    }

    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Set bit `i`; returns false if it was already set (or out of range).
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.words[(i / 64) as usize] |= 1 << (i % 64);
        self.count += 1;
        true
    }

    pub fn first_clear(&self) -> Option<u32> {
        self.words.iter().enumerate().find_map(|(w, &word)| {
            if word == u64::MAX {
                return None;
            }
            let i = w as u32 * 64 + (!word).trailing_zeros();
            (i < self.len).then_some(i)
        })
    }

    /// Clear indices in order.
    pub fn clear_indices(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| !self.get(i))
    }

    /// Maximal runs of set bits at or after `from`, as (start, end) pairs.
    pub fn set_ranges_from(&self, from: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
        let mut i = from;
        std::iter::from_fn(move || {
            while i < self.len && !self.get(i) {
                i += 1;
            }
            if i >= self.len {
                return None;
            }
            let start = i;
            while i < self.len && self.get(i) {
                i += 1;
            }
            Some((start, i))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count_and_ranges() {
        let mut b = Bitmap::new(130);
        assert_eq!(b.first_clear(), Some(0));
        assert!(b.set(0));
        assert!(!b.set(0));
        assert!(!b.set(130));
        for i in 64..70 {
            b.set(i);
        }
        b.set(129);
        assert_eq!(b.count(), 8);
        assert_eq!(b.first_clear(), Some(1));
        let r: Vec<_> = b.set_ranges_from(0).collect();
        assert_eq!(r, vec![(0, 1), (64, 70), (129, 130)]);
        for i in 0..130 {
            b.set(i);
        }
        assert!(b.is_complete());
        assert_eq!(b.first_clear(), None);
    }
}
