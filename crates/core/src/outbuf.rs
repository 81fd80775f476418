//! A connection's unsent output: a byte queue that is cheap to append to and to consume from
//! the front.

/// Capacity an empty buffer keeps for the next message; anything larger is given back to the
/// allocator once the buffer drains, so an idle connection holds at most this much.
const KEEP_WHEN_EMPTY: usize = 16 * 1024;

/// Unsent output bytes, in order.
///
/// It is a `Vec` with a read offset: appending writes at the end, [`OutBuf::consume`] moves the
/// offset, and the consumed front is reclaimed when it grows past half the buffer, so each byte
/// is moved at most once on average.
#[derive(Debug, Default, Clone)]
pub struct OutBuf {
    buf: Vec<u8>,
    head: usize,
}

impl OutBuf {
    /// An empty buffer that holds no memory yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes still to send.
    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// True when nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The unsent bytes, oldest first, as one slice.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Appends bytes to send after everything already queued.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Marks the first `n` unsent bytes as sent.
    ///
    /// # Panics
    /// If `n` is more than [`OutBuf::len`]: the socket cannot have taken bytes it was not given.
    pub fn consume(&mut self, n: usize) {
        assert!(
            n <= self.len(),
            "consumed {n} of {} pending bytes",
            self.len()
        );
        self.head += n;
        if self.head == self.buf.len() {
            self.head = 0;
            self.buf.clear();
            if self.buf.capacity() > KEEP_WHEN_EMPTY {
                self.buf = Vec::new();
            }
        }
    }

    /// Hands over every unsent byte as an owned `Vec` (exactly the pending bytes, oldest first),
    /// and continues with `replacement` (cleared) as its storage.
    ///
    /// Completion models need this: a posted send must own its buffer until the kernel says the
    /// send is over, while new output keeps arriving. The move costs no copy when nothing was
    /// consumed from the front.
    pub fn take(&mut self, mut replacement: Vec<u8>) -> Vec<u8> {
        replacement.clear();
        if self.head > 0 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        std::mem::replace(&mut self.buf, replacement)
    }

    /// Bytes of heap this buffer holds (for memory accounting).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_out_in_order_across_partial_consumes() {
        let mut b = OutBuf::new();
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for i in 0..1000u32 {
            let chunk: Vec<u8> = (0..(i % 97) as u8).map(|x| x ^ (i as u8)).collect();
            b.extend(&chunk);
            expected.extend_from_slice(&chunk);
            let take = (i as usize * 7) % (b.len() + 1);
            got.extend_from_slice(&b.as_slice()[..take]);
            b.consume(take);
        }
        got.extend_from_slice(b.as_slice());
        assert_eq!(got, expected);
    }

    #[test]
    fn a_drained_buffer_gives_large_capacity_back() {
        let mut b = OutBuf::new();
        b.extend(&vec![7u8; 1 << 20]);
        assert!(b.capacity() >= 1 << 20);
        b.consume(1 << 20);
        assert!(b.is_empty());
        assert!(b.capacity() <= KEEP_WHEN_EMPTY);
    }

    #[test]
    fn take_hands_over_exactly_the_unsent_bytes() {
        let mut b = OutBuf::new();
        b.extend(b"hello world");
        b.consume(6);
        let taken = b.take(Vec::with_capacity(4));
        assert_eq!(taken, b"world");
        assert!(b.is_empty());
        b.extend(b"!");
        assert_eq!(b.as_slice(), b"!");
    }

    #[test]
    #[should_panic(expected = "consumed 5 of 4")]
    fn consuming_more_than_pending_is_a_bug() {
        let mut b = OutBuf::new();
        b.extend(b"abcd");
        b.consume(5);
    }
}
