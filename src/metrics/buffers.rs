//! The memory scrapes write the exposition into, kept between scrapes.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Most buffers kept between scrapes: one per family of a `full` exposition, twice over for
/// two scrapes at once.
const MAX_KEPT: usize = 48;

/// The buffers a scrape writes its families into, back once their response has been sent, so
/// the next scrape writes into memory that is already paged in. A fresh buffer of many MiB
/// costs the kernel a page fault and zeroing per page; at 10,000 services that was a few
/// percent of a scrape. What is kept is the largest scrape's bytes, until the process ends.
#[derive(Clone, Default)]
pub struct Buffers(Arc<Mutex<Vec<Vec<u8>>>>);

impl Buffers {
    /// An empty buffer with room for `capacity` bytes: the smallest kept one that has it,
    /// else the largest kept one grown (nothing to copy), else a new one.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let fits = kept
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= capacity)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let largest = || {
            kept.iter()
                .enumerate()
                .max_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)
        };
        match fits.or_else(largest) {
            Some(i) => {
                let mut buf = kept.swap_remove(i);
                buf.reserve(capacity);
                buf
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// `buf` as a response body part; its memory comes back here when the part is dropped.
    pub fn body(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Returning {
            buf,
            home: self.clone(),
        })
    }
}

/// A buffer on its way out in a response, owed back to its [`Buffers`].
struct Returning {
    buf: Vec<u8>,
    home: Buffers,
}

impl AsRef<[u8]> for Returning {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut kept = self.home.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < MAX_KEPT {
            kept.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_once_its_response_part_is_dropped() {
        let buffers = Buffers::default();
        let mut first = buffers.take(1 << 20);
        first.extend_from_slice(b"x_total 7\n");
        let address = first.as_ptr();
        let sent = buffers.body(first);
        assert_eq!(&sent[..], b"x_total 7\n");
        let meanwhile = buffers.take(1 << 10);
        assert_ne!(
            meanwhile.as_ptr(),
            address,
            "a buffer still being sent is not handed out"
        );
        drop(sent);
        let again = buffers.take(1 << 20);
        assert_eq!(again.as_ptr(), address, "the same memory, back");
        assert!(again.is_empty());
        assert!(
            buffers.take(1 << 20).capacity() >= 1 << 20,
            "none kept: a new one"
        );
    }
}
