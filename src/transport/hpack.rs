//! A small HPACK decoder (RFC 7541) for the `:authority` rewriter: header field representations, the
//! static table, the connection's dynamic table, and Huffman strings (decoded with `httlib-huffman`'s
//! table-driven decoder). It never panics on input; every malformed block is an [`HpackError`].

use std::collections::VecDeque;

use httlib_huffman::DecoderSpeed;

/// One decoded header field.
pub type HeaderField = (Vec<u8>, Vec<u8>);

/// Why a header block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer too large")]
    IntegerOverflow,
    #[error("index {0} is not in the header tables")]
    BadIndex(usize),
    #[error("invalid Huffman string")]
    Huffman,
    #[error("dynamic table size update over the allowed size")]
    TableSizeTooLarge,
    #[error("dynamic table size update after a header field")]
    LateTableSizeUpdate,
    #[error("decoded header list over {MAX_DECODED_LIST} bytes")]
    ListTooLarge,
}

/// Largest decoded header list accepted (indexed references can repeat large entries).
pub const MAX_DECODED_LIST: usize = 1024 * 1024;

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Per-entry overhead in the dynamic table's size accounting (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The decoding side of one connection's HPACK state.
pub struct HpackDecoder {
    /// Newest first.
    dynamic: VecDeque<HeaderField>,
    size: usize,
    max_size: usize,
    /// The SETTINGS_HEADER_TABLE_SIZE the server side announced: the ceiling for size updates.
    max_allowed: usize,
}

impl HpackDecoder {
    pub fn new(max_allowed: usize) -> Self {
        Self {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: max_allowed,
            max_allowed,
        }
    }

    /// Decodes one complete header block, updating the dynamic table.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<HeaderField>, HpackError> {
        let mut fields = Vec::new();
        let mut decoded_bytes = 0usize;
        let mut pos = 0;
        while pos < block.len() {
            let rest = &block[pos..];
            let first = rest[0];
            let field = if first & 0x80 != 0 {
                let (index, used) = decode_integer(rest, 7)?;
                pos += used;
                self.entry(index)?
            } else if first & 0x40 != 0 {
                let (field, used) = self.literal(rest, 6)?;
                pos += used;
                self.insert(field.clone());
                field
            } else if first & 0x20 != 0 {
                if !fields.is_empty() {
                    return Err(HpackError::LateTableSizeUpdate);
                }
                let (size, used) = decode_integer(rest, 5)?;
                pos += used;
                self.resize(size)?;
                continue;
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                let (field, used) = self.literal(rest, 4)?;
                pos += used;
                field
            };
            decoded_bytes += field.0.len() + field.1.len();
            if decoded_bytes > MAX_DECODED_LIST {
                return Err(HpackError::ListTooLarge);
            }
            fields.push(field);
        }
        Ok(fields)
    }

    fn entry(&self, index: usize) -> Result<HeaderField, HpackError> {
        if index == 0 {
            return Err(HpackError::BadIndex(0));
        }
        if let Some((name, value)) = STATIC_TABLE.get(index - 1) {
            return Ok((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
        }
        self.dynamic
            .get(index - STATIC_TABLE.len() - 1)
            .cloned()
            .ok_or(HpackError::BadIndex(index))
    }

    fn literal(&self, rest: &[u8], prefix_bits: u8) -> Result<(HeaderField, usize), HpackError> {
        let (index, mut used) = decode_integer(rest, prefix_bits)?;
        let name = if index == 0 {
            let (name, n) = decode_string(&rest[used..])?;
            used += n;
            name
        } else {
            self.entry(index)?.0
        };
        let (value, n) = decode_string(&rest[used..])?;
        Ok(((name, value), used + n))
    }

    fn insert(&mut self, field: HeaderField) {
        let entry_size = field.0.len() + field.1.len() + ENTRY_OVERHEAD;
        if entry_size > self.max_size {
            // RFC 7541 §4.4: an entry larger than the table empties it; not an error.
            self.dynamic.clear();
            self.size = 0;
            return;
        }
        self.size += entry_size;
        self.dynamic.push_front(field);
        self.evict();
    }

    fn resize(&mut self, size: usize) -> Result<(), HpackError> {
        if size > self.max_allowed {
            return Err(HpackError::TableSizeTooLarge);
        }
        self.max_size = size;
        self.evict();
        Ok(())
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            let Some((name, value)) = self.dynamic.pop_back() else {
                self.size = 0;
                return;
            };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }
}

/// An integer with an N-bit prefix (RFC 7541 §5.1): (value, bytes used). Values stay below 2^28.
fn decode_integer(buf: &[u8], prefix_bits: u8) -> Result<(usize, usize), HpackError> {
    let mask = (1usize << prefix_bits) - 1;
    let first = *buf.first().ok_or(HpackError::Truncated)?;
    let mut value = usize::from(first) & mask;
    if value < mask {
        return Ok((value, 1));
    }
    let mut shift = 0u32;
    for (i, &byte) in buf.iter().enumerate().skip(1) {
        if shift > 21 {
            return Err(HpackError::IntegerOverflow);
        }
        value += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(HpackError::Truncated)
}

/// A string literal (RFC 7541 §5.2): (octets, bytes used).
fn decode_string(buf: &[u8]) -> Result<(Vec<u8>, usize), HpackError> {
    let huffman = buf.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let (len, used) = decode_integer(buf, 7)?;
    let end = used.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = buf.get(used..end).ok_or(HpackError::Truncated)?;
    if !huffman {
        return Ok((raw.to_vec(), end));
    }
    let mut decoded = Vec::with_capacity(raw.len() * 8 / 5 + 1);
    httlib_huffman::decode(raw, &mut decoded, DecoderSpeed::FourBits)
        .map_err(|_| HpackError::Huffman)?;
    Ok((decoded, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn fields(list: &[(&str, &str)]) -> Vec<HeaderField> {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn rfc_7541_c4_requests_with_huffman_and_the_dynamic_table() {
        let mut decoder = HpackDecoder::new(4096);
        let first = decoder
            .decode(&hex("828684418cf1e3c2e5f23a6ba0ab90f4ff"))
            .unwrap();
        assert_eq!(
            first,
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        let second = decoder.decode(&hex("828684be5886a8eb10649cbf")).unwrap();
        assert_eq!(second[3], fields(&[(":authority", "www.example.com")])[0]);
        assert_eq!(second[4], fields(&[("cache-control", "no-cache")])[0]);
        let third = decoder
            .decode(&hex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"))
            .unwrap();
        assert_eq!(third[4], fields(&[("custom-key", "custom-value")])[0]);
        assert_eq!(third[3].1, b"www.example.com");
    }

    #[test]
    fn agrees_with_another_implementation_on_its_static_table_and_literals() {
        let mut ours = HpackDecoder::new(4096);
        let mut theirs = loona_hpack::Decoder::new();
        for index in 1..=61u8 {
            let block = [0x80 | index];
            assert_eq!(
                ours.decode(&block).unwrap(),
                theirs.decode(&block).unwrap(),
                "index {index}"
            );
        }
        let mut encoder = loona_hpack::Encoder::new();
        let list = fields(&[
            (":authority", "/var/run/x.sock"),
            ("x-a", "b"),
            ("te", "trailers"),
        ]);
        for _ in 0..3 {
            let block = encoder.encode(list.iter().map(|(n, v)| (&n[..], &v[..])));
            assert_eq!(ours.decode(&block).unwrap(), list);
        }
    }

    #[test]
    fn huffman_strings_from_an_independent_encoder() {
        let value = b"/var/run/secrets-store-csi-providers/openclaw.sock";
        let mut encoded = Vec::new();
        httlib_huffman::encode(value, &mut encoded).unwrap();
        let mut block = vec![0x01]; // literal without indexing, name :authority (static 1)
        block.push(0x80 | encoded.len() as u8);
        block.extend(&encoded);
        let mut decoder = HpackDecoder::new(4096);
        assert_eq!(
            decoder.decode(&block).unwrap(),
            fields(&[(":authority", std::str::from_utf8(value).unwrap())])
        );
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        let mut decoder = HpackDecoder::new(4096);
        for block in [
            vec![0x80],                                     // index 0
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], // integer overflow
            vec![0xbe],                                     // empty dynamic table
            vec![0x40, 0x05, b'a'],                         // truncated name
            vec![0x00, 0x81, 0xff, 0x01, b'a'],             // bad Huffman (EOS)
            vec![0x3f, 0xe2, 0x1f],                         // size update to 4097 > allowed
            vec![0x82, 0x20],                               // size update after a field
            vec![0xff],                                     // truncated integer
        ] {
            assert!(decoder.decode(&block).is_err(), "{block:?}");
        }
    }

    #[test]
    fn dynamic_table_evicts_and_bounds_amplification() {
        let mut decoder = HpackDecoder::new(100);
        // Two entries of 32+1+1 = 34 bytes fit; a third evicts the oldest.
        for name in [b'a', b'b', b'c'] {
            decoder.decode(&[0x40, 0x01, name, 0x01, b'v']).unwrap();
        }
        assert_eq!(decoder.decode(&[0xbe]).unwrap()[0].0, b"c");
        assert_eq!(decoder.decode(&[0xbf]).unwrap()[0].0, b"b");
        assert!(
            decoder.decode(&[0xc0]).is_err(),
            "the oldest entry was evicted"
        );
        let mut big = HpackDecoder::new(4096);
        let mut block = vec![0x40, 0x01, b'k', 0x7f, 0xa1, 0x1e];
        block.extend(vec![b'x'; 4000]);
        big.decode(&block).unwrap();
        let references = vec![0xbe; 300];
        assert_eq!(big.decode(&references), Err(HpackError::ListTooLarge));
    }
}
