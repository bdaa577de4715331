//! HTTP/2 `:authority` compatibility for drivers before v1.6.0.
//!
//! Those drivers dial with grpc-go so that the socket path (`/var/run/…/openclaw.sock`) is sent as the
//! `:authority` pseudo-header. The `h2` crate under tonic refuses such an authority and resets the stream.
//! [`AuthorityRewrite`] sits between the accepted socket and h2: it reads the client's HTTP/2 frames,
//! decodes every header block with the connection's HPACK state, replaces an `:authority` that is not a
//! valid URI authority with `localhost`, and re-encodes the block without indexing, so h2's HPACK dynamic
//! table stays empty and in step. Every other frame passes through unchanged. Input the rewriter cannot
//! follow (a bad preface, an HPACK error, a header block over [`MAX_HEADER_BLOCK`]) is passed through raw
//! from that point on, so h2 answers it with its usual protocol error.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::hpack::{HeaderField, HpackDecoder};

/// The HTTP/2 client connection preface.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The authority used in place of one h2 would refuse (what drivers from v1.6.0 send).
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";
/// The largest header block (HEADERS plus CONTINUATION payloads) the rewriter buffers.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// SETTINGS_MAX_FRAME_SIZE of the server side (h2's default, which tonic keeps).
const SERVER_MAX_FRAME: usize = 16_384;
/// SETTINGS_HEADER_TABLE_SIZE the server side announces (the protocol default).
const HEADER_TABLE_SIZE: usize = 4096;

const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    length: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8]) -> Self {
        Self {
            length: (usize::from(bytes[0]) << 16)
                | (usize::from(bytes[1]) << 8)
                | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream_id: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    fn write(&self, out: &mut BytesMut) {
        let len = self.length as u32;
        out.put_slice(&len.to_be_bytes()[1..]);
        out.put_u8(self.kind);
        out.put_u8(self.flags);
        out.put_u32(self.stream_id);
    }
}

/// A header block being collected across HEADERS and CONTINUATION frames.
struct OpenBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames exactly as received, for passing through if the block cannot be rewritten.
    raw: Vec<u8>,
}

enum Phase {
    Preface,
    FrameHeader,
    /// Copying the payload of a frame that is not part of a header block.
    Forward {
        remaining: usize,
    },
    /// Waiting for the whole payload of a HEADERS or CONTINUATION frame.
    HeaderPayload(FrameHeader),
    /// Input the rewriter cannot follow: everything passes through unchanged.
    Passthrough,
}

/// The client-to-server half of the rewriter, without I/O: feed bytes in, take bytes out.
pub struct Rewriter {
    phase: Phase,
    input: BytesMut,
    output: BytesMut,
    decoder: HpackDecoder,
    block: Option<OpenBlock>,
    rewritten: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self {
            phase: Phase::Preface,
            input: BytesMut::new(),
            output: BytesMut::new(),
            decoder: HpackDecoder::new(HEADER_TABLE_SIZE),
            block: None,
            rewritten: 0,
        }
    }
}

impl Rewriter {
    /// Adds bytes read from the client and processes every complete unit.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        self.process();
    }

    /// Bytes ready for h2.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.output
    }

    /// How many `:authority` values were replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// The client closed its side: whatever is still held goes to h2 as it is.
    pub fn finish(&mut self) {
        if let Some(block) = self.block.take() {
            self.output.extend_from_slice(&block.raw);
        }
        let rest = self.input.split();
        self.output.extend_from_slice(&rest);
    }

    fn process(&mut self) {
        loop {
            match self.phase {
                Phase::Passthrough => {
                    let rest = self.input.split();
                    self.output.extend_from_slice(&rest);
                    return;
                }
                Phase::Preface => {
                    if self.input.len() < PREFACE.len() {
                        if !PREFACE.starts_with(&self.input) {
                            self.phase = Phase::Passthrough;
                            continue;
                        }
                        return;
                    }
                    let preface = self.input.split_to(PREFACE.len());
                    self.phase = if preface[..] == PREFACE[..] {
                        Phase::FrameHeader
                    } else {
                        Phase::Passthrough
                    };
                    self.output.extend_from_slice(&preface);
                }
                Phase::FrameHeader => {
                    if self.input.len() < FRAME_HEADER_LEN {
                        return;
                    }
                    let header = FrameHeader::parse(&self.input[..FRAME_HEADER_LEN]);
                    self.phase = self.on_frame_header(header);
                }
                Phase::Forward { remaining } => {
                    let n = remaining.min(self.input.len());
                    let chunk = self.input.split_to(n);
                    self.output.extend_from_slice(&chunk);
                    if n == remaining {
                        self.phase = Phase::FrameHeader;
                    } else {
                        self.phase = Phase::Forward {
                            remaining: remaining - n,
                        };
                        return;
                    }
                }
                Phase::HeaderPayload(header) => {
                    if self.input.len() < FRAME_HEADER_LEN + header.length {
                        return;
                    }
                    let frame = self.input.split_to(FRAME_HEADER_LEN + header.length);
                    self.phase = match self.on_header_frame(header, &frame) {
                        Ok(()) => Phase::FrameHeader,
                        Err(raw) => {
                            self.output.extend_from_slice(&raw);
                            Phase::Passthrough
                        }
                    };
                }
            }
        }
    }

    fn on_frame_header(&mut self, header: FrameHeader) -> Phase {
        let is_block_frame = header.kind == TYPE_HEADERS || header.kind == TYPE_CONTINUATION;
        if !is_block_frame {
            if let Some(block) = self.block.take() {
                // A frame inside a header block is a protocol error: let h2 see it as sent.
                self.output.extend_from_slice(&block.raw);
                return Phase::Passthrough;
            }
            let frame_header = self.input.split_to(FRAME_HEADER_LEN);
            self.output.extend_from_slice(&frame_header);
            return if header.length == 0 {
                Phase::FrameHeader
            } else {
                Phase::Forward {
                    remaining: header.length,
                }
            };
        }
        let buffered = self.block.as_ref().map_or(0, |b| b.raw.len());
        if buffered + FRAME_HEADER_LEN + header.length > MAX_HEADER_BLOCK {
            if let Some(block) = self.block.take() {
                self.output.extend_from_slice(&block.raw);
            }
            return Phase::Passthrough;
        }
        Phase::HeaderPayload(header)
    }

    /// Adds one HEADERS or CONTINUATION frame; on error returns the raw bytes to pass through.
    fn on_header_frame(&mut self, header: FrameHeader, frame: &[u8]) -> Result<(), Vec<u8>> {
        let payload = &frame[FRAME_HEADER_LEN..];
        match (header.kind, self.block.as_mut()) {
            (TYPE_HEADERS, None) => {
                let Some((priority, fragment)) = split_headers_payload(header.flags, payload)
                else {
                    return Err(frame.to_vec());
                };
                self.block = Some(OpenBlock {
                    stream_id: header.stream_id,
                    end_stream: header.flags & FLAG_END_STREAM != 0,
                    priority,
                    fragment: fragment.to_vec(),
                    raw: frame.to_vec(),
                });
            }
            (TYPE_CONTINUATION, Some(block)) if block.stream_id == header.stream_id => {
                block.fragment.extend_from_slice(payload);
                block.raw.extend_from_slice(frame);
            }
            _ => {
                let mut raw = self.block.take().map(|b| b.raw).unwrap_or_default();
                raw.extend_from_slice(frame);
                return Err(raw);
            }
        }
        if header.flags & FLAG_END_HEADERS != 0
            && let Some(block) = self.block.take()
        {
            self.emit_block(block)?;
        }
        Ok(())
    }

    fn emit_block(&mut self, block: OpenBlock) -> Result<(), Vec<u8>> {
        let Ok(mut fields) = self.decoder.decode(&block.fragment) else {
            return Err(block.raw);
        };
        for (name, value) in &mut fields {
            if name.as_slice() == b":authority" && !is_valid_authority(value) {
                if self.rewritten == 0 {
                    let shown: String = String::from_utf8_lossy(value).chars().take(256).collect();
                    tracing::debug!(authority = %shown, "replacing an :authority h2 refuses with localhost (driver before v1.6.0)");
                }
                *value = REPLACEMENT_AUTHORITY.to_vec();
                self.rewritten += 1;
            }
        }
        let encoded = encode_without_indexing(&fields);
        write_header_frames(&mut self.output, &block, &encoded);
        Ok(())
    }
}

/// The priority fields and the header block fragment of a HEADERS payload, without padding.
fn split_headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut rest = payload;
    let mut pad = 0usize;
    if flags & FLAG_PADDED != 0 {
        let (&len, tail) = rest.split_first()?;
        pad = usize::from(len);
        rest = tail;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        if rest.len() < 5 {
            return None;
        }
        let mut fields = [0u8; 5];
        fields.copy_from_slice(&rest[..5]);
        priority = Some(fields);
        rest = &rest[5..];
    }
    if pad > rest.len() {
        return None;
    }
    Some((priority, &rest[..rest.len() - pad]))
}

/// What h2 accepts as an authority (it parses the value with the `http` crate).
fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// HPACK "literal header field never indexed" with literal names and no Huffman coding (RFC 7541 §6.2.3).
fn encode_without_indexing(fields: &[HeaderField]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|(n, v)| n.len() + v.len() + 8).sum());
    for (name, value) in fields {
        out.push(0x10);
        encode_string(&mut out, name);
        encode_string(&mut out, value);
    }
    out
}

fn encode_string(out: &mut Vec<u8>, bytes: &[u8]) {
    encode_integer(out, bytes.len(), 7, 0x00);
    out.extend_from_slice(bytes);
}

/// HPACK integer with an N-bit prefix (RFC 7541 §5.1); `high` holds the bits above the prefix.
fn encode_integer(out: &mut Vec<u8>, value: usize, prefix_bits: u8, high: u8) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// One HEADERS frame, followed by CONTINUATION frames when the block is over the server's frame size.
fn write_header_frames(out: &mut BytesMut, block: &OpenBlock, encoded: &[u8]) {
    let priority_len = if block.priority.is_some() { 5 } else { 0 };
    let first_len = encoded.len().min(SERVER_MAX_FRAME - priority_len);
    let (first, mut rest) = encoded.split_at(first_len);
    let mut flags = if block.end_stream { FLAG_END_STREAM } else { 0 };
    if block.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    FrameHeader {
        length: priority_len + first.len(),
        kind: TYPE_HEADERS,
        flags,
        stream_id: block.stream_id,
    }
    .write(out);
    if let Some(priority) = block.priority {
        out.put_slice(&priority);
    }
    out.put_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(SERVER_MAX_FRAME));
        rest = tail;
        FrameHeader {
            length: chunk.len(),
            kind: TYPE_CONTINUATION,
            flags: if rest.is_empty() { FLAG_END_HEADERS } else { 0 },
            stream_id: block.stream_id,
        }
        .write(out);
        out.put_slice(chunk);
    }
}

/// For tests and the fuzz target: checks that `output`, the rewriter's output for the client stream
/// `input`, carries the same header fields as `input`, block by block, with only the `:authority`
/// values h2 would refuse replaced by [`REPLACEMENT_AUTHORITY`]. The input is decoded with its
/// connection's HPACK state, the output with a fresh decoder, as h2 decodes it. The comparison ends at
/// the first input block the rewriter cannot follow (from there on it passes bytes through). Returns the
/// number of blocks compared.
#[doc(hidden)]
pub fn check_rewrite(input: &[u8], output: &[u8]) -> Result<usize, String> {
    let sent = header_blocks(input, MAX_HEADER_BLOCK);
    // Re-encoding without Huffman or indexing may make a block larger than the input's limit.
    let received = header_blocks(output, usize::MAX);
    let mut client_state = HpackDecoder::new(HEADER_TABLE_SIZE);
    let mut h2_state = HpackDecoder::new(HEADER_TABLE_SIZE);
    for (index, block) in sent.iter().enumerate() {
        let Ok(mut expected) = client_state.decode(block) else {
            return Ok(index);
        };
        for (name, value) in &mut expected {
            if name.as_slice() == b":authority" && !is_valid_authority(value) {
                *value = REPLACEMENT_AUTHORITY.to_vec();
            }
        }
        let Some(rewritten) = received.get(index) else {
            return Err(format!("header block {index} is missing from the output"));
        };
        let fields = h2_state
            .decode(rewritten)
            .map_err(|e| format!("header block {index} of the output does not decode: {e:?}"))?;
        if fields != expected {
            return Err(format!(
                "header block {index}: the output's fields differ from the input's beyond :authority"
            ));
        }
    }
    Ok(sent.len())
}

/// The complete header blocks of a client stream, up to where the rewriter would stop following it
/// (a bad preface or frame, a frame inside a block, a block over `limit` bytes of frames).
fn header_blocks(mut stream: &[u8], limit: usize) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    if !stream.starts_with(PREFACE) {
        return blocks;
    }
    stream = &stream[PREFACE.len()..];
    let mut open: Option<(u32, usize, Vec<u8>)> = None;
    while stream.len() >= FRAME_HEADER_LEN {
        let header = FrameHeader::parse(stream);
        let Some(frame) = stream.get(..FRAME_HEADER_LEN + header.length) else {
            break;
        };
        stream = &stream[frame.len()..];
        let payload = &frame[FRAME_HEADER_LEN..];
        let buffered = open.as_ref().map_or(0, |(_, raw, _)| *raw);
        let fragment = match (header.kind, &mut open) {
            (TYPE_HEADERS | TYPE_CONTINUATION, _)
                if buffered.saturating_add(frame.len()) > limit =>
            {
                break;
            }
            (TYPE_HEADERS, None) => match split_headers_payload(header.flags, payload) {
                Some((_, fragment)) => {
                    open = Some((header.stream_id, 0, Vec::new()));
                    fragment
                }
                None => break,
            },
            (TYPE_CONTINUATION, Some((stream_id, _, _))) if *stream_id == header.stream_id => {
                payload
            }
            (TYPE_HEADERS | TYPE_CONTINUATION, _) => break,
            (_, Some(_)) => break,
            (_, None) => continue,
        };
        if let Some((_, raw, block)) = &mut open {
            *raw += frame.len();
            block.extend_from_slice(fragment);
        }
        if header.flags & FLAG_END_HEADERS != 0
            && let Some((_, _, block)) = open.take()
        {
            blocks.push(block);
        }
    }
    blocks
}

/// An accepted connection with the rewriter on its read side; writes go straight to the socket.
pub struct AuthorityRewrite<S> {
    inner: S,
    rewriter: Rewriter,
    scratch: Box<[u8]>,
    eof: bool,
}

impl<S> AuthorityRewrite<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: Rewriter::default(),
            scratch: vec![0u8; 32 * 1024].into_boxed_slice(),
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRewrite<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let output = this.rewriter.output();
            if !output.is_empty() {
                let n = output.len().min(buf.remaining());
                buf.put_slice(&output[..n]);
                output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut scratch = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut scratch))?;
            if scratch.filled().is_empty() {
                this.eof = true;
                this.rewriter.finish();
            } else {
                this.rewriter.feed(scratch.filled());
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRewrite<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loona_hpack::{Decoder, Encoder};

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        FrameHeader {
            length: payload.len(),
            kind,
            flags,
            stream_id,
        }
        .write(&mut out);
        out.extend_from_slice(payload);
        out.to_vec()
    }

    fn request_headers(authority: &str) -> HeaderList {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/v1alpha1.CSIDriverProvider/Version"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    /// Splits the rewriter's output into frames and decodes every header block with a fresh decoder
    /// (as h2 would), returning (frame kinds, decoded blocks).
    type HeaderList = Vec<HeaderField>;

    fn read_back(mut bytes: &[u8]) -> (Vec<u8>, Vec<HeaderList>) {
        assert!(bytes.starts_with(PREFACE));
        bytes = &bytes[PREFACE.len()..];
        let mut decoder = Decoder::new();
        let mut kinds = vec![];
        let mut blocks = vec![];
        let mut fragment = vec![];
        while !bytes.is_empty() {
            let header = FrameHeader::parse(&bytes[..9]);
            let payload = &bytes[9..9 + header.length];
            kinds.push(header.kind);
            if header.kind == TYPE_HEADERS || header.kind == TYPE_CONTINUATION {
                let (_, f) = split_headers_payload(
                    if header.kind == TYPE_HEADERS {
                        header.flags
                    } else {
                        0
                    },
                    payload,
                )
                .unwrap();
                fragment.extend_from_slice(f);
                if header.flags & FLAG_END_HEADERS != 0 {
                    blocks.push(decoder.decode(&fragment).unwrap());
                    fragment.clear();
                }
            }
            bytes = &bytes[9 + header.length..];
        }
        (kinds, blocks)
    }

    fn authority_of(block: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        block
            .iter()
            .find(|(n, _)| n == b":authority")
            .unwrap()
            .1
            .clone()
    }

    #[test]
    fn rewrites_socket_path_authority_across_blocks_sharing_hpack_state() {
        let mut encoder = Encoder::new();
        let path = "/var/run/secrets-store-csi-providers/openclaw.sock";
        let first = encoder.encode(request_headers(path).iter().map(|(n, v)| (&n[..], &v[..])));
        // The second block refers to the first one's fields through the client's dynamic table.
        let second = encoder.encode(request_headers(path).iter().map(|(n, v)| (&n[..], &v[..])));
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &first));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0"));
        // Second request: padded, with priority, split across a CONTINUATION frame.
        let mut payload = vec![3u8];
        payload.extend([0, 0, 0, 0, 16]);
        payload.extend(&second[..4]);
        payload.extend([0, 0, 0]);
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY,
            3,
            &payload,
        ));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &second[4..]));
        let mut rewriter = Rewriter::default();
        // Feed one byte at a time: frames may arrive split anywhere.
        for byte in &input {
            rewriter.feed(std::slice::from_ref(byte));
        }
        let output = rewriter.output().split();
        let (kinds, blocks) = read_back(&output);
        assert_eq!(kinds, vec![0x4, TYPE_HEADERS, 0x0, TYPE_HEADERS]);
        // Decoded afresh, each block is the request's fields with only :authority replaced.
        let expected = request_headers("localhost");
        assert_eq!(blocks, vec![expected.clone(), expected]);
        assert_eq!(rewriter.rewritten(), 2);
        assert_eq!(check_rewrite(&input, &output), Ok(2));
        // The check itself fails on a stream that kept the socket path.
        assert!(check_rewrite(&input, &input).is_err());
    }

    #[test]
    fn keeps_a_valid_authority_and_large_blocks() {
        let mut encoder = Encoder::new();
        let mut headers = request_headers("localhost");
        headers.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let block = encoder.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut input = PREFACE.to_vec();
        for (i, chunk) in block.chunks(10_000).enumerate() {
            let last = (i + 1) * 10_000 >= block.len();
            let kind = if i == 0 {
                TYPE_HEADERS
            } else {
                TYPE_CONTINUATION
            };
            input.extend(frame(
                kind,
                if last { FLAG_END_HEADERS } else { 0 },
                1,
                chunk,
            ));
        }
        let mut rewriter = Rewriter::default();
        rewriter.feed(&input);
        let (kinds, blocks) = read_back(&rewriter.output().split());
        assert_eq!(
            kinds,
            vec![TYPE_HEADERS, TYPE_CONTINUATION, TYPE_CONTINUATION]
        );
        assert_eq!(authority_of(&blocks[0]), b"localhost");
        assert_eq!(blocks[0], headers);
        assert_eq!(rewriter.rewritten(), 0);
    }

    #[test]
    fn passes_through_what_it_cannot_follow() {
        let garbage = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        let mut rewriter = Rewriter::default();
        rewriter.feed(&garbage);
        assert_eq!(&rewriter.output()[..], &garbage[..]);

        let mut input = PREFACE.to_vec();
        let bad_block = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff]);
        input.extend(&bad_block);
        input.extend(frame(0x4, 0, 0, &[]));
        let mut rewriter = Rewriter::default();
        rewriter.feed(&input);
        assert_eq!(&rewriter.output()[..], &input[..]);

        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[0x82]));
        let mut rewriter = Rewriter::default();
        rewriter.feed(&input);
        assert_eq!(&rewriter.output()[..], &input[..]);
    }

    /// xorshift64*: deterministic pseudo-random bytes for the robustness test below.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn arbitrary_and_mutated_input_never_panics_and_is_bounded() {
        let mut encoder = Encoder::new();
        let headers = request_headers("/var/run/x.sock");
        let block = encoder.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut valid = PREFACE.to_vec();
        valid.extend(frame(0x4, 0, 0, &[]));
        valid.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_PADDED,
            1,
            &[[2u8].as_slice(), &block, &[0, 0]].concat(),
        ));
        valid.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0"));
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        let mut compared = 0;
        for round in 0..3000 {
            let mut input = if round % 3 == 0 {
                (0..random.below(400))
                    .map(|_| random.next() as u8)
                    .collect()
            } else {
                valid.clone()
            };
            for _ in 0..random.below(6) {
                if input.is_empty() {
                    break;
                }
                let at = random.below(input.len());
                input[at] = random.next() as u8;
            }
            if round % 3 == 1 {
                input.truncate(PREFACE.len() + random.below(valid.len() - PREFACE.len()));
            }
            let mut rewriter = Rewriter::default();
            let mut output = Vec::new();
            for chunk in input.chunks(1 + random.below(64)) {
                rewriter.feed(chunk);
                output.extend_from_slice(&rewriter.output().split());
            }
            rewriter.finish();
            output.extend_from_slice(&rewriter.output().split());
            let produced = output.len();
            if let Err(difference) = check_rewrite(&input, &output) {
                panic!("round {round}: {difference}");
            }
            if round % 3 == 2 {
                compared += usize::from(check_rewrite(&input, &output) == Ok(1));
            }
            // Re-encoding may grow a block (no Huffman, no indexing) but never without bound.
            assert!(
                produced <= input.len() * 8 + 1024,
                "round {round}: {produced} from {}",
                input.len()
            );
        }
        // Mutated valid streams whose block still decodes were compared field by field.
        assert!(compared >= 200, "only {compared} blocks compared");
    }

    #[test]
    fn a_block_that_grows_past_the_input_limit_when_re_encoded_is_still_checked() {
        // One 4,000-byte field added to the dynamic table, then referenced 100 times by index.
        let mut block = vec![0x40, 0x01, b'x', 0x7f, 0xa1, 0x1e];
        block.extend(std::iter::repeat_n(b'a', 4000));
        block.extend(std::iter::repeat_n(0xbe, 100));
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
        let mut rewriter = Rewriter::default();
        rewriter.feed(&input);
        let output = rewriter.output().split();
        assert!(output.len() > MAX_HEADER_BLOCK, "{} bytes", output.len());
        assert_eq!(check_rewrite(&input, &output), Ok(1));
    }

    #[test]
    fn integer_encoding_matches_rfc_examples() {
        let mut out = vec![];
        encode_integer(&mut out, 10, 5, 0);
        assert_eq!(out, [10]);
        out.clear();
        encode_integer(&mut out, 1337, 5, 0);
        assert_eq!(out, [31, 154, 10]);
    }
}
