//! Undo `Content-Encoding` (gzip, deflate, br) before comparing, with a cap on the decoded size.

use std::borrow::Cow;
use std::io::Read;

use http::HeaderMap;
use http::header::CONTENT_ENCODING;

/// A body after decoding its content codings.
#[derive(Debug)]
pub(crate) enum Decoded<'a> {
    /// The representation itself: decoded, or never encoded.
    Body(Cow<'a, [u8]>),
    /// Could not be decoded (unknown coding, corrupt stream): the raw bytes, and why.
    Raw(&'a [u8], String),
    /// Decoding would exceed the cap: a zip bomb or simply too big to compare.
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
        }
    }
}

/// Decode `body` as its `Content-Encoding` header says, producing at most `limit` bytes.
pub(crate) fn decode<'a>(headers: &HeaderMap, body: &'a [u8], limit: usize) -> Decoded<'a> {
    let mut codings = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let Ok(value) = value.to_str() else {
            return Decoded::Raw(body, "content-encoding is not text".into());
        };
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let coding = match token.to_ascii_lowercase().as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                other => {
                    return Decoded::Raw(body, format!("unsupported content-encoding {other:?}"));
                }
            };
            codings.push(coding);
        }
    }
    // An empty body has nothing to decode (HEAD, 204 and 304 keep the coding header).
    if codings.is_empty() || body.is_empty() {
        return Decoded::Body(Cow::Borrowed(body));
    }
    // Codings are listed in the order they were applied: undo them last first.
    let mut current: Cow<'a, [u8]> = Cow::Borrowed(body);
    for coding in codings.into_iter().rev() {
        match decode_one(coding, &current, limit) {
            Ok(Some(decoded)) => current = Cow::Owned(decoded),
            Ok(None) => return Decoded::TooLarge,
            Err(error) => {
                return Decoded::Raw(body, format!("invalid {} body: {error}", coding.name()));
            }
        }
    }
    Decoded::Body(current)
}

/// `Ok(None)` when the output would exceed `limit`.
fn decode_one(coding: Coding, input: &[u8], limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    match coding {
        Coding::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(input), limit),
        Coding::Brotli => read_bounded(brotli::Decompressor::new(input, 4096), limit),
        // "deflate" means zlib-wrapped (RFC 9110 §8.4.1.2), but some servers send a raw
        // deflate stream; accept both.
        Coding::Deflate => match read_bounded(flate2::read::ZlibDecoder::new(input), limit) {
            Err(_) => read_bounded(flate2::read::DeflateDecoder::new(input), limit),
            decoded => decoded,
        },
    }
}

fn read_bounded(reader: impl Read, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    reader.take(cap).read_to_end(&mut out)?;
    Ok((out.len() <= limit).then_some(out))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use http::HeaderValue;

    use super::*;

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    pub(crate) fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            writer.write_all(data).unwrap();
        }
        out
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn encoded(coding: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_str(coding).unwrap());
        headers
    }

    fn body(decoded: Decoded<'_>) -> Vec<u8> {
        match decoded {
            Decoded::Body(body) => body.into_owned(),
            other => panic!("not decoded: {other:?}"),
        }
    }

    #[test]
    fn decodes_each_coding() {
        let data = br#"{"hello":"world"}"#;
        assert_eq!(body(decode(&encoded("gzip"), &gzip(data), 1024)), data);
        assert_eq!(body(decode(&encoded("x-gzip"), &gzip(data), 1024)), data);
        assert_eq!(body(decode(&encoded("br"), &brotli(data), 1024)), data);
        assert_eq!(body(decode(&encoded("deflate"), &zlib(data), 1024)), data);
        assert_eq!(
            body(decode(&encoded("deflate"), &raw_deflate(data), 1024)),
            data
        );
        assert_eq!(body(decode(&encoded("identity"), data, 1024)), data);
        assert_eq!(body(decode(&HeaderMap::new(), data, 1024)), data);
        assert_eq!(body(decode(&encoded("gzip"), b"", 1024)), b"");
    }

    #[test]
    fn undoes_stacked_codings_in_reverse() {
        let data = b"stacked";
        let twice = brotli(&gzip(data));
        assert_eq!(body(decode(&encoded("gzip, br"), &twice, 1024)), data);
    }

    #[test]
    fn invalid_streams_are_raw_bytes() {
        for coding in ["gzip", "br", "deflate"] {
            match decode(&encoded(coding), b"definitely not compressed", 1024) {
                Decoded::Raw(raw, why) => {
                    assert_eq!(raw, b"definitely not compressed");
                    assert!(why.contains("invalid"), "{why}");
                }
                other => panic!("{coding}: {other:?}"),
            }
        }
        // A truncated gzip stream is invalid too.
        let mut cut = gzip(&[b'x'; 1000]);
        cut.truncate(cut.len() / 2);
        assert!(matches!(
            decode(&encoded("gzip"), &cut, 4096),
            Decoded::Raw(..)
        ));
        assert!(matches!(
            decode(&encoded("zstd"), b"abc", 1024),
            Decoded::Raw(_, why) if why.contains("zstd")
        ));
    }

    #[test]
    fn caps_decoded_size() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 64 << 10, "compresses well: {}", bomb.len());
        assert!(matches!(
            decode(&encoded("gzip"), &bomb, 1 << 20),
            Decoded::TooLarge
        ));
        let exact = gzip(&[7u8; 100]);
        assert_eq!(body(decode(&encoded("gzip"), &exact, 100)).len(), 100);
        assert!(matches!(
            decode(&encoded("gzip"), &exact, 99),
            Decoded::TooLarge
        ));
        let br_bomb = brotli(&vec![0u8; 4 << 20]);
        assert!(matches!(
            decode(&encoded("br"), &br_bomb, 1 << 20),
            Decoded::TooLarge
        ));
    }
}
